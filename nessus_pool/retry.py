"""Retry policy and circuit breaker: pure code, no I/O, unit-tested with plain numbers."""

from __future__ import annotations

import enum
import random

import msgspec

from nessus_pool.errors import RateLimitedError, ScannerError


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Exponential backoff with full jitter: attempt n (1-based) waits
    ``uniform(0, min(max_delay_s, base_delay_s * 2**(n-1)))``."""

    max_attempts: int = 3
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        cap = min(self.max_delay_s, self.base_delay_s * (2 ** max(0, attempt - 1)))
        return rng.uniform(0.0, cap)

    def should_retry(self, exc: BaseException, attempt: int) -> bool:
        """Whether a call that failed with ``exc`` on its ``attempt``-th try is tried again.
        Rate limiting does not use an attempt (the caller does not count it)."""
        if isinstance(exc, RateLimitedError):
            return True
        if not isinstance(exc, ScannerError) or not exc.transient:
            return False
        return attempt < self.max_attempts

    def wait_s(self, exc: BaseException, attempt: int, rng: random.Random) -> float:
        if isinstance(exc, RateLimitedError) and exc.retry_after_s is not None:
            return min(self.max_delay_s, max(0.0, exc.retry_after_s))
        return self.delay_s(attempt, rng)


class BreakerState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; after ``reset_s`` lets one probe through
    (half-open); a success closes it, a failure opens it again."""

    def __init__(self, threshold: int = 5, reset_s: float = 30.0) -> None:
        self.threshold = threshold
        self.reset_s = reset_s
        self.failures = 0
        self.state = BreakerState.CLOSED
        self.opened_at_s = 0.0

    def allow(self, now_s: float) -> bool:
        if self.state is BreakerState.OPEN and now_s - self.opened_at_s >= self.reset_s:
            self.state = BreakerState.HALF_OPEN
            return True
        return self.state is BreakerState.CLOSED

    def success(self) -> None:
        self.failures = 0
        self.state = BreakerState.CLOSED

    def failure(self, now_s: float) -> None:
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.threshold:
            self.state = BreakerState.OPEN
            self.opened_at_s = now_s
