"""In-memory pool queues and the scanner slot registry. Pure data structures, no I/O.

The engine writes every change through to the store before (or as) it changes these, and
rebuilds them from the store at start.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from nessus_pool.models import Task

QueueKey = tuple[int, int, str]  # (-priority, seq, task_id)


class PoolQueue:
    """Tasks waiting for a scanner: highest priority first, then FIFO by ``seq``.

    A sorted list with ``bisect`` gives O(log n) lookups and queue positions; the insert and
    remove memmoves are fast enough for 100,000 queued tasks.
    """

    def __init__(self) -> None:
        self._keys: list[QueueKey] = []
        self._key_of: dict[str, QueueKey] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._key_of

    def __iter__(self) -> Iterator[str]:
        return (k[2] for k in self._keys)

    def push(self, task: Task) -> None:
        key = (-task.priority, task.seq, task.task_id)
        if task.task_id in self._key_of:
            return
        self._key_of[task.task_id] = key
        if not self._keys or key > self._keys[-1]:
            self._keys.append(key)
        else:
            bisect.insort(self._keys, key)

    def extend(self, tasks: Iterable[Task]) -> None:
        """Push many at once (recovery): one sort instead of an insort each."""
        for task in tasks:
            if task.task_id not in self._key_of:
                self._key_of[task.task_id] = (-task.priority, task.seq, task.task_id)
        self._keys = sorted(self._key_of.values())

    def remove(self, task_id: str) -> bool:
        key = self._key_of.pop(task_id, None)
        if key is None:
            return False
        i = bisect.bisect_left(self._keys, key)
        del self._keys[i]
        return True

    def peek(self) -> str | None:
        return self._keys[0][2] if self._keys else None

    def position(self, task_id: str) -> int | None:
        """1-based position, or None if not queued."""
        key = self._key_of.get(task_id)
        if key is None:
            return None
        return bisect.bisect_left(self._keys, key) + 1

    def oldest_seq(self) -> int | None:
        return min((k[1] for k in self._keys), default=None)


@dataclass
class ScannerSlots:
    """Slot accounting and health of one scanner. ``active`` never exceeds ``capacity`` through
    :meth:`reserve`; recovery may :meth:`adopt` past it (scans already running)."""

    scanner_id: str
    pool: str
    capacity: int
    enabled: bool = True
    draining: bool = False
    reachable: bool = False
    scan_api: bool = True
    version: str | None = None
    nessus_type: str | None = None
    message: str = "not probed yet"
    #: names of the scanner's saved policies at the last probe; None = not known
    policies: frozenset[str] | None = None
    active: dict[str, int] = field(default_factory=dict)  # task_id -> hosts in flight
    last_used_ms: int = 0
    removed: bool = False

    @property
    def free(self) -> int:
        return max(0, self.capacity - len(self.active))

    @property
    def hosts_in_flight(self) -> int:
        return sum(self.active.values())

    @property
    def eligible(self) -> bool:
        return (
            self.enabled
            and not self.draining
            and not self.removed
            and self.reachable
            and self.scan_api
            and self.free > 0
        )

    def reserve(self, task_id: str, hosts: int, now_ms: int) -> None:
        if task_id in self.active:
            return
        if len(self.active) >= self.capacity:
            raise RuntimeError(f"scanner {self.scanner_id} is full")  # a bug, never user input
        self.active[task_id] = hosts
        self.last_used_ms = now_ms

    def adopt(self, task_id: str, hosts: int) -> None:
        self.active[task_id] = hosts

    def release(self, task_id: str) -> bool:
        return self.active.pop(task_id, None) is not None


def select_scanner(
    scanners: list[ScannerSlots], requested: str | None = None, policy: str | None = None
) -> ScannerSlots | None:
    """Least-loaded eligible scanner: active/capacity, then hosts in flight, then least
    recently used. ``requested`` restricts the choice to that scanner (still capped);
    ``policy`` to scanners known to have that saved policy."""
    best: ScannerSlots | None = None
    best_key: tuple[float, int, int] | None = None
    for s in scanners:
        if requested is not None and s.scanner_id != requested:
            continue
        if policy is not None and (s.policies is None or policy not in s.policies):
            continue
        if not s.eligible:
            continue
        key = (len(s.active) / s.capacity, s.hosts_in_flight, s.last_used_ms)
        if best_key is None or key < best_key:
            best, best_key = s, key
    return best
