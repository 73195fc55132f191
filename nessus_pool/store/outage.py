"""The database went away: the reconnect backoff and what callers are told meanwhile.

The group-commit writer keeps a batch that failed because the server is unreachable and
commits it again on this backoff (its callers keep waiting: nothing acknowledged or already
decided is dropped); each retry is the reconnect attempt. While the outage lasts, the service
refuses new writes at once with :class:`StorageUnavailableError` (HTTP 503, ``Retry-After`` =
the seconds until the next attempt) instead of queueing them behind the stuck batch, and
reads served from memory say how old the database's confirmation of them is (``as_of_ms``).

Bookkeeping over an injected clock: no I/O but its two log lines (the outage's start and its
end, each written once, whoever noticed it), no asyncio primitive made before a loop runs.
"""

from __future__ import annotations

import asyncio
import logging
import math

from nessus_pool.clock import Clock, SystemClock
from nessus_pool.errors import StorageUnavailableError

#: first reconnect delay, growth factor and cap (seconds)
FIRST_RETRY_S = 0.5
RETRY_FACTOR = 2.0
MAX_RETRY_S = 10.0

log = logging.getLogger("nessus_pool.store")


def backoff_s(
    failures: int, *, first_s: float = FIRST_RETRY_S, max_s: float = MAX_RETRY_S
) -> float:
    """The wait after the ``failures``-th failed attempt in a row (1-based): 0.5, 1, 2, 4,
    8, 10, 10, ... s. No jitter: one daemon retries one database."""
    if failures <= 0:
        return 0.0
    return min(max_s, first_s * RETRY_FACTOR ** (failures - 1))


class Outage:
    """Whether the database is reachable, as the last commit found it; the reconnect
    schedule while it is not."""

    def __init__(self, clock: Clock | None = None, *, max_retry_s: float = MAX_RETRY_S) -> None:
        self.clock: Clock = clock or SystemClock()
        self.max_retry_s = max_retry_s
        #: failed attempts in a row (0: up)
        self.failures = 0
        #: wall time of the first failure of this outage
        self.since_ms: int | None = None
        #: wall time of the last commit the database confirmed (None: none yet)
        self.last_ok_ms: int | None = None
        #: monotonic time of the next reconnect attempt
        self.next_try_s = 0.0
        self.last_error = ""
        self._down_waiters: list[asyncio.Future[None]] = []

    @property
    def down(self) -> bool:
        return self.failures > 0

    def ok(self) -> None:
        """A commit went through: the database is up (again)."""
        if self.failures:
            log.warning(
                "database reachable again",
                extra={"event": "storage_reconnected", "attempts": self.failures,
                       "down_ms": self.clock.now_ms() - (self.since_ms or 0)},
            )  # fmt: skip
        self.failures = 0
        self.since_ms = None
        self.last_ok_ms = self.clock.now_ms()

    def failed(self, exc: BaseException) -> float:
        """An attempt failed because the server is unreachable: the seconds to wait before
        the next one."""
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if self.failures == 0:
            self.since_ms = self.clock.now_ms()
            log.error(
                "database unreachable; writes wait for it, retried on a backoff",
                extra={"event": "storage_unavailable", "error": self.last_error},
            )
        self.failures += 1
        delay_s = backoff_s(self.failures, max_s=self.max_retry_s)
        self.next_try_s = self.clock.monotonic_s() + delay_s
        waiters, self._down_waiters = self._down_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)
        return delay_s

    def retry_after_s(self) -> int:
        """Whole seconds until the next reconnect attempt (at least 1): ``Retry-After``."""
        left_s = self.next_try_s - self.clock.monotonic_s()
        return max(1, math.ceil(left_s))

    def error(self, *, write: bool = False) -> StorageUnavailableError:
        """What a write (or a read that needs the database) is told during the outage. The
        driver's words stay in the log (they name the database's host and port)."""
        n = self.retry_after_s()
        stored = "; nothing was stored" if write else ""
        return StorageUnavailableError(
            f"the database is unavailable{stored}; retry after {n} s", retry_after_s=n
        )

    def check(self, *, write: bool = False) -> None:
        """Raise :meth:`error` while the database is down."""
        if self.down:
            raise self.error(write=write)

    async def wait_down(self) -> None:
        """Return at the next failure (or at once if the database is down now)."""
        if self.down:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._down_waiters.append(fut)
        try:
            await fut
        finally:
            if fut in self._down_waiters:
                self._down_waiters.remove(fut)
