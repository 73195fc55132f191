"""One pool as the engine holds it: its config, queue, scanners, wake-up event, recent scan
durations, and the wait estimate built from them."""

from __future__ import annotations

import asyncio
import bisect
import collections
import math
from dataclasses import dataclass, field

from nessus_pool.config import PoolConfig
from nessus_pool.engine.scanner import ScannerHandle
from nessus_pool.queues import PoolQueue
from nessus_pool.retry import BreakerState, RetryPolicy


def retry_policy(pc: PoolConfig) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=pc.max_attempts,
        base_delay_s=pc.retry_base_delay_s,
        max_delay_s=pc.retry_max_delay_s,
    )


@dataclass
class SharedQueue:
    """[cluster] A pool's queue as the database holds it (refreshed with each heartbeat):
    every daemon answers queue depth, position and wait with the same numbers."""

    queued: int = 0
    oldest_created_ms: int | None = None
    #: scans in flight on every daemon
    active: int = 0
    #: ``(-priority, seq)`` of the first :data:`QUEUE_KEYS` queued tasks, in queue order
    keys: list[tuple[int, int]] = field(default_factory=list)

    def position(self, priority: int, seq: int) -> int | None:
        """1-based place of a queued task (None past the keys kept)."""
        i = bisect.bisect_left(self.keys, (-priority, seq))
        if i >= len(self.keys) and len(self.keys) >= QUEUE_KEYS:
            return None
        return i + 1


#: queued tasks per pool whose order each daemon keeps in memory for positions
QUEUE_KEYS = 10_000


@dataclass
class PoolState:
    config: PoolConfig
    queue: PoolQueue = field(default_factory=PoolQueue)
    scanners: dict[str, ScannerHandle] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    durations_s: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=50)
    )
    dispatcher: asyncio.Task[None] | None = None
    #: [cluster] the database's view of this pool's queue (None: the in-memory queue)
    shared: SharedQueue | None = None
    #: the scanner-call retry policy of this pool, built once per config (not per call)
    retry: RetryPolicy = field(init=False)

    def __post_init__(self) -> None:
        self.retry = retry_policy(self.config)

    def set_config(self, pc: PoolConfig) -> None:
        """A reload: the new config and the policy built from it."""
        self.config = pc
        self.retry = retry_policy(pc)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def scanner_lost_after_s(self) -> float:
        return self.config.scanner_lost_after_s

    @property
    def export_deadline_s(self) -> float:
        return self.config.export_deadline_s

    @property
    def capacity(self) -> int:
        return sum(
            s.slots.capacity
            for s in self.scanners.values()
            if s.slots.enabled and not s.slots.removed
        )

    @property
    def active(self) -> int:
        if self.shared is not None:
            return max(self.shared.active, sum(len(s.slots.active) for s in self.scanners.values()))
        return sum(len(s.slots.active) for s in self.scanners.values())

    @property
    def queue_depth(self) -> int:
        return self.shared.queued if self.shared is not None else len(self.queue)

    def mean_duration_s(self) -> float | None:
        return sum(self.durations_s) / len(self.durations_s) if self.durations_s else None

    def estimated_wait_s(
        self, position: int | None, default_duration_s: float
    ) -> tuple[float | None, str]:
        """Seconds until the task at queue ``position`` (1-based) starts, and the basis of
        the estimate; None when it cannot be estimated."""
        if position is None:
            return None, "not queued"
        cap = self.capacity
        if cap == 0:
            return None, "the pool has no enabled scanner"
        mean = self.mean_duration_s()
        basis = f"mean of the last {len(self.durations_s)} completed scans"
        if mean is None:
            mean, basis = default_duration_s, "default duration (no completed scan yet)"
        waves = math.ceil(max(0, position - cap + self.active) / cap) if position else 0
        return round(waves * mean + (mean / 2 if self.active >= cap else 0), 1), basis


#: why a queued task waits, most hopeful first: when scanners are blocked for different
#: reasons, the pool reports the one most likely to clear soonest
WAITING_REASONS = (
    "capacity_full",
    "circuit_open",
    "scanners_unreachable",
    "maintenance_window",
    "scanners_draining",
    "export_only",
    "no_scanners",
)


def scanner_blocker(sc: ScannerHandle) -> str | None:
    """Why this scanner cannot take a new scan now, or None if it can. Pure: reads state
    only (unlike :meth:`ScannerHandle.available`, which moves an expired breaker to
    half-open)."""
    slots = sc.slots
    if slots.removed or not slots.enabled or slots.draining:
        return "scanners_draining"
    if not slots.reachable:
        return "scanners_unreachable"
    if not slots.scan_api:
        return "export_only"
    if sc.breaker.state is BreakerState.OPEN:
        return "circuit_open"
    if sc.in_window(sc.clock.now_ms()):
        return "maintenance_window"
    if slots.free <= 0:
        return "capacity_full"
    return None


def waiting_reason(
    pool: PoolState, requested_scanner: str | None = None, policy: str | None = None
) -> str | None:
    """Why a task queued in ``pool`` (pinned to ``requested_scanner``, if given; needing the
    saved ``policy``, if given) is not dispatched now, from :data:`WAITING_REASONS`; None when
    a scanner could take it. Only scanners known to have the policy count."""
    scanners = [
        s
        for s in pool.scanners.values()
        if (requested_scanner is None or s.scanner_id == requested_scanner)
        and (policy is None or (s.slots.policies is not None and policy in s.slots.policies))
    ]
    blockers = set()
    for sc in scanners:
        blocker = scanner_blocker(sc)
        if blocker is None:
            return None
        blockers.add(blocker)
    if not blockers:
        return "no_scanners"
    return next(r for r in WAITING_REASONS if r in blockers)


def never_launches(pool: PoolState, requested_scanner: str | None = None) -> list[str]:
    """The scanners of ``pool`` (or the requested one) if every one of them is known to be
    unable to launch scans through the API (an export-only licence), else []. A scanner not
    probed yet, or merely down, may still launch: it does not count."""
    scanners = [
        s
        for s in pool.scanners.values()
        if not s.slots.removed and (requested_scanner is None or s.scanner_id == requested_scanner)
    ]
    if scanners and all(s.slots.reachable and not s.slots.scan_api for s in scanners):
        return [s.scanner_id for s in scanners]
    return []
