"""Task ids: unique, increasing within a process (index locality), not enumerable."""

from __future__ import annotations

import itertools
import re

from nessus_pool.service.ids import check_task_id, new_task_id


def test_ids_increase_are_unique_and_keep_the_16_hex_format() -> None:
    ids = [new_task_id() for _ in range(20_000)]
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    assert all(check_task_id(i) == i for i in ids[:100])
    # fixed-width hex: string order is numeric order, as the B-tree indexes see it
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_the_next_id_is_not_the_last_plus_one() -> None:
    ids = [int(new_task_id(), 16) for _ in range(10_000)]
    steps = {b - a for a, b in itertools.pairwise(ids)}
    low_bits = {i & 0xFFFFF for i in ids}
    # the 20 low bits are random: steps vary and the low bits barely repeat
    assert len(steps) > 9_000
    assert len(low_bits) > 9_000
