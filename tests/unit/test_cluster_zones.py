"""Zones compiled once (engine.cluster.Zone) match exactly as ``fnmatch.fnmatchcase``
against each pattern did: scanner ids, globs, character classes, and ids full of regular
expression syntax."""

from __future__ import annotations

import fnmatch
import itertools
import random

from nessus_pool.engine.cluster import Zone, compiled_zone, fair_share, in_zone

PATTERNS = [
    "lan-1",
    "lan-*",
    "dmz-?",
    "s[0-3]",
    "s[!0-3]x",
    "a.b",
    "a+b",
    "(x)|y",
    "^s1$",
    "s\\1",
    "[",
    "[]",
    "[]]",
    "a[",
    "*",
    "",
    "é-1",
    "lan-1\n",
    "x{2}",
]
IDS = [
    "lan-1",
    "lan-10",
    "LAN-1",
    "dmz-1",
    "dmz-12",
    "s0",
    "s3",
    "s4",
    "s4x",
    "s1x",
    "a.b",
    "axb",
    "a+b",
    "aab",
    "(x)|y",
    "y",
    "^s1$",
    "s1",
    "s\\1",
    "[",
    "[]",
    "]",
    "a[",
    "",
    "é-1",
    "lan-1\n",
    "xx",
    "x{2}",
]


def reference(zone: list[str] | None, scanner_id: str) -> bool:
    """The matching before zones were compiled: every pattern through fnmatchcase."""
    return zone is None or any(fnmatch.fnmatchcase(scanner_id, z) for z in zone)


def test_a_compiled_zone_matches_as_fnmatchcase_did() -> None:
    for size in (0, 1, 2, 3):
        for zone in itertools.combinations(PATTERNS, size):
            compiled = Zone(zone)
            for sid in IDS:
                assert (sid in compiled) is reference(list(zone), sid), (zone, sid)
                assert in_zone(list(zone), sid) is reference(list(zone), sid), (zone, sid)
    assert in_zone(None, "anything")


def test_fair_share_is_unchanged_on_random_zones() -> None:
    rng = random.Random(7)
    ids = [f"s{i}" for i in range(40)] + ["lan-1", "dmz-2"]
    pool = [*ids[:20], "s1*", "s2?", "lan-*", "s[0-4]", "*"]

    def reference_share(mine: list[str], alive: list[list[str] | None]) -> int:
        share = 0.0
        for sid in mine:
            n = sum(1 for z in alive if reference(z, sid))
            share += 1 / max(1, n)
        return -int(-(share - 1e-9) // 1)

    for _ in range(300):
        alive: list[list[str] | None] = [
            None if rng.random() < 0.15 else rng.sample(pool, rng.randint(0, 6))
            for _ in range(rng.randint(1, 4))
        ]
        mine = [sid for sid in ids if reference(alive[0], sid)]
        assert fair_share(mine, alive) == reference_share(mine, alive)


def test_the_same_patterns_compile_once() -> None:
    assert compiled_zone(("s1", "s2*")) is compiled_zone(("s1", "s2*"))
