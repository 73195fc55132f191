"""Task ids: how they are made and what a caller may send as one."""

from __future__ import annotations

import random
import re
import secrets

from nessus_pool.errors import ValidationError

TASK_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_TASK_ID = re.compile(TASK_ID_PATTERN)

_ids = random.Random(secrets.randbits(128))

#: bits of an id below its counter: random, so the next id is not the last one plus one
_RANDOM_BITS = 20
_COUNTER_BITS = 64 - _RANDOM_BITS


class _Counter:
    """The ids of one process increase: a counter from a random start in the lower half of
    its range (2**43 ids of headroom) above 20 random bits."""

    __slots__ = ("next",)

    def __init__(self) -> None:
        self.next = _ids.getrandbits(_COUNTER_BITS - 1)


_counter = _Counter()


def new_task_id() -> str:
    """16 hex digits (64 bits). Task ids name things, they grant nothing (tokens do), so a
    generator seeded once from the OS is enough and avoids a syscall per submit.

    The ids one process makes increase (a counter above 20 random bits), so a submit's
    entries in the ``task_id`` and event indexes land on the last page of each B-tree instead
    of a random one: random ids cost the SQLite commit thread 48.8 us per submit, increasing
    ones 27.6 us (bench/submit_profile.py, C=50). Two daemons, or two runs of one, start
    their counters at independent random points of a 2**44 range: their ids can only meet
    where those ranges overlap, which is about as unlikely as two 64-bit random ids meeting."""
    n = _counter.next
    _counter.next = n + 1
    return f"{(n << _RANDOM_BITS) | _ids.getrandbits(_RANDOM_BITS):016x}"


def check_task_id(task_id: str, field: str = "task_id") -> str:
    if not isinstance(task_id, str) or not _TASK_ID.match(task_id):
        raise ValidationError(f"{field} must match {TASK_ID_PATTERN}", field=field)
    return task_id
