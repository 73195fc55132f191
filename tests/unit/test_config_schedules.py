"""``[[schedules]]`` in the config file: the issue's shape parses; every bad field is refused
with its path; a reload's diff names the schedules it adds, removes and changes."""

from __future__ import annotations

import pytest

from nessus_pool.config import diff, parse_config
from nessus_pool.errors import ConfigError

BASE = """
[[pools]]
name = "dmz"

[credentials.ops]
username = "audit"
password = { env = "NO_SUCH_VAR_FOR_TESTS" }

[[schedules]]
name = "weekly-dmz"
targets = "10.1.0.0/24"
pool = "dmz"
cron = "0 2 * * 1"            # or: every-s = 3600
timezone = "Europe/Berlin"
"""


def test_the_issue_shape_parses() -> None:
    cfg = parse_config(BASE).config
    (s,) = cfg.schedules
    assert (s.name, s.cron, s.every_s, s.timezone, s.overlap, s.enabled) == (
        "weekly-dmz",
        "0 2 * * 1",
        None,
        "Europe/Berlin",
        "skip",
        True,
    )
    assert s.spec().pool == "dmz"


@pytest.mark.parametrize(
    ("extra", "path", "needle"),
    [
        ('cron = "0 2 * *"', "$.schedules[1].cron", "5 fields"),
        ('every-s = 60\npool = "nope"', "$.schedules[1].pool", "not defined"),
        ('every-s = 60\ntimezone = "Berlin"', "$.schedules[1].timezone", "IANA"),
        ('every-s = 60\ncron = "* * * * *"', "$.schedules[1].cron", "exactly one"),
        ("every-s = 0", "$.schedules[1].every-s", "1.."),
        ('every-s = 60\nscan-type = "authenticated"', "$.schedules[1].credential", "credential"),
        (
            'every-s = 60\nscan-type = "authenticated"\ncredential = "nope"',
            "$.schedules[1].credential",
            "not defined",
        ),
        ('every-s = 60\ntargets = "999.1.1.1/99"', "$.schedules[1].targets", ""),
        ('every-s = 60\novertap = "skip"', "$.schedules[1]", "unknown field"),
        ('every-s = 60\noverlap = "maybe"', "$.schedules[1].overlap", ""),
        (
            "every-s = 60\nstart = 2026-02-01T00:00:00Z\nend = 2026-01-01T00:00:00Z",
            "$.schedules[1].end",
            "after start",
        ),
    ],
)
def test_bad_schedules_name_their_path(extra: str, path: str, needle: str) -> None:
    entry = '\n[[schedules]]\nname = "second"\ntargets = "10.0.0.1"\n'
    text = BASE + entry + extra + "\n"
    if "targets =" in extra:
        text = text.replace('targets = "10.0.0.1"\n', "", 1)
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert err.value.path == path, str(err.value)
    assert needle in str(err.value)


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + BASE.split("[[schedules]]")[1].join(["[[schedules]]", ""]))
    assert err.value.path == "$.schedules[1].name"


def test_reload_diff_names_schedule_changes() -> None:
    old = parse_config(BASE).config
    new = parse_config(
        BASE.replace('"0 2 * * 1"', '"0 3 * * 1"')
        + '\n[[schedules]]\nname = "hourly"\ntargets = "10.0.0.1"\nevery-s = 3600\n'
    ).config
    d = diff(old, new)
    assert (d.schedules_added, d.schedules_removed, d.schedules_changed) == (
        ["hourly"],
        [],
        ["weekly-dmz"],
    )
    assert diff(new, old).schedules_removed == ["hourly"]


def test_the_example_file_validates() -> None:
    from pathlib import Path

    from nessus_pool.config import load_config

    path = Path(__file__).resolve().parents[2] / "examples" / "schedules.toml"
    cfg = load_config(path).config
    assert [s.name for s in cfg.schedules] == ["weekly-dmz", "hourly-core", "q1-audit"]
    assert cfg.schedules[1].credential == "lab" and cfg.schedules[1].catch_up_s == 900
