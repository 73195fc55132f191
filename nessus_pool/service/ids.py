"""Task ids: how they are made and what a caller may send as one."""

from __future__ import annotations

import random
import re
import secrets

from nessus_pool.errors import ValidationError

TASK_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_TASK_ID = re.compile(TASK_ID_PATTERN)

_ids = random.Random(secrets.randbits(128))


def new_task_id() -> str:
    """64 random bits, hex. Task ids name things, they grant nothing (tokens do), so a
    generator seeded once from the OS is enough and avoids a syscall per submit."""
    return f"{_ids.getrandbits(64):016x}"


def check_task_id(task_id: str, field: str = "task_id") -> str:
    if not isinstance(task_id, str) or not _TASK_ID.match(task_id):
        raise ValidationError(f"{field} must match {TASK_ID_PATTERN}", field=field)
    return task_id
