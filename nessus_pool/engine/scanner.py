"""One scanner as the engine sees it: its client, slots, breaker, and retried calls."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol, TypeVar

import msgspec

from nessus_pool.clock import Clock, sleep_or_event
from nessus_pool.engine.gate import CallPriority, RequestGate
from nessus_pool.errors import RateLimitedError, ScannerAuthError, ScannerError
from nessus_pool.models import ScanSpec
from nessus_pool.nessus import (
    Capability,
    ExportResult,
    RemoteScan,
    RemoteScanSummary,
    ScanDetails,
)
from nessus_pool.queues import ScannerSlots
from nessus_pool.retry import BreakerState, CircuitBreaker, RetryPolicy
from nessus_pool.windows import Calendar

log = logging.getLogger("nessus_pool.engine")

T = TypeVar("T")


class ScannerClient(Protocol):
    """The calls the engine makes on one scanner: :class:`nessus_pool.nessus.NessusClient`
    in production, :class:`nessus_pool.testing.FakeNessus` in tests."""

    async def probe(self) -> Capability: ...
    async def create_scan(self, spec: ScanSpec) -> RemoteScan: ...
    async def launch_scan(self, scan_id: int) -> str: ...
    async def scan_details(self, scan_id: int) -> ScanDetails: ...
    async def find_scans_by_name(self, name: str) -> list[RemoteScanSummary]: ...
    async def stop_scan(self, scan_id: int) -> None: ...
    async def pause_scan(self, scan_id: int) -> None: ...
    async def resume_scan(self, scan_id: int) -> None: ...
    async def delete_scan(self, scan_id: int) -> None: ...
    async def export_scan(
        self,
        scan_id: int,
        dest: Path,
        *,
        deadline_s: float = ...,
        deadline_at_s: float | None = ...,
        max_bytes: int = ...,
        poll_interval_s: float = ...,
    ) -> ExportResult: ...
    async def close(self) -> None: ...


class ScannerSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What the engine needs to run one scanner; secrets already resolved. Never logged."""

    scanner_id: str
    pool: str
    url: str
    capacity: int
    access_key: str | None = None
    secret_key: str | None = None
    username: str | None = None
    password: str | None = None
    verify_tls: bool = True
    ca_file: str | None = None
    timeout_s: float = 30.0
    enabled: bool = True
    remote_scanner_id: int | None = None
    folder_id: int | None = None
    simulated: bool = False

    def __repr__(self) -> str:
        return f"ScannerSpec({self.scanner_id!r}, pool={self.pool!r}, url={self.url!r})"

    def connection_key(self) -> tuple[object, ...]:
        """Fields whose change needs a new client."""
        return (
            self.url,
            self.access_key,
            self.secret_key,
            self.username,
            self.password,
            self.verify_tls,
            self.ca_file,
            self.timeout_s,
        )


class ScannerHandle:
    def __init__(
        self,
        spec: ScannerSpec,
        client: ScannerClient,
        clock: Clock,
        *,
        http_concurrency: int = 8,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.spec = spec
        self.client = client
        self.clock = clock
        self.slots = ScannerSlots(
            scanner_id=spec.scanner_id, pool=spec.pool, capacity=spec.capacity, enabled=spec.enabled
        )
        self.breaker = breaker or CircuitBreaker()
        #: our calls in flight on this scanner, handed out launches first
        self.gate = RequestGate(http_concurrency)
        self.rng = random.Random(hash(spec.scanner_id) & 0xFFFF)
        self.probe_now = asyncio.Event()
        #: set after every probe (tests wait on it instead of sleeping through probe rounds)
        self.probed = asyncio.Event()
        self.prober: asyncio.Task[None] | None = None
        #: its pool's and its own maintenance windows (set by engine.windows)
        self.calendar = Calendar()

    @property
    def scanner_id(self) -> str:
        return self.spec.scanner_id

    def available(self) -> bool:
        """Eligible for a new task right now (slots, health, breaker)."""
        return self.slots.eligible and self.breaker.allow(self.clock.monotonic_s())

    def in_window(self, now_ms: int) -> bool:
        """Inside a maintenance window: no scan launches here now."""
        return self.calendar.in_window(now_ms)

    @property
    def circuit_state(self) -> str:
        return self.breaker.state.name.lower()

    def _record_failure(self, exc: ScannerError) -> None:
        if exc.transient:
            was = self.breaker.state
            self.breaker.failure(self.clock.monotonic_s())
            if self.breaker.state is BreakerState.OPEN and was is not BreakerState.OPEN:
                log.warning(
                    "circuit opened",
                    extra={
                        "event": "scanner_circuit_opened",
                        "scanner": self.scanner_id,
                        "failures": self.breaker.failures,
                        "error": str(exc),
                    },
                )
                self.slots.reachable = False
                self.slots.message = f"unreachable: {exc}"

    async def call(
        self,
        op: Callable[[], Awaitable[T]],
        policy: RetryPolicy,
        *,
        idempotent: bool = True,
        what: str = "",
        interrupt: asyncio.Event | None = None,
        priority: CallPriority = CallPriority.LAUNCH,
    ) -> T:
        """Run one client call, retrying transient failures of idempotent calls with
        backoff. 429 waits Retry-After without using an attempt. A set ``interrupt`` ends a
        backoff sleep early and re-raises the last error instead of trying again (a cancel
        does not wait out a minute of backoff). ``priority`` orders the calls waiting for
        one of the scanner's request slots (a launch before a poll before an export)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self.gate.slot(priority):
                    result = await op()
            except ScannerAuthError as exc:
                self.slots.message = f"authentication failed: {exc.message}"
                raise
            except ScannerError as exc:
                if isinstance(exc, RateLimitedError):
                    attempt -= 1
                else:
                    self._record_failure(exc)
                if not (idempotent or isinstance(exc, RateLimitedError)) or not policy.should_retry(
                    exc, attempt
                ):
                    raise
                delay = policy.wait_s(exc, attempt, self.rng)
                log.info(
                    "scanner call retried",
                    extra={
                        "event": "scanner_call_retry",
                        "scanner": self.scanner_id,
                        "call": what,
                        "attempt": attempt,
                        "delay_s": round(delay, 3),
                        "error": str(exc),
                    },
                )
                if interrupt is None:
                    await self.clock.sleep(delay)
                elif await sleep_or_event(self.clock, interrupt, delay):
                    raise
            else:
                if self.breaker.state is not BreakerState.CLOSED or not self.slots.reachable:
                    self.breaker.success()
                    self.slots.reachable = True
                else:
                    self.breaker.success()
                return result

    async def probe(self) -> bool:
        """Refresh health and licence capability. Returns True if it became eligible."""
        try:
            return await self._probe()
        finally:
            self.probed.set()

    async def _probe(self) -> bool:
        before = self.slots.eligible
        try:
            cap = await self.client.probe()
        except ScannerError as exc:
            self.slots.reachable = False
            self.slots.message = str(exc)
            return False
        except Exception as exc:
            # a reply we cannot handle (say RecursionError from deeply nested JSON) makes the
            # scanner unhealthy, not the daemon: the probe loop must live on
            log.warning(
                "probe failed",
                exc_info=exc,
                extra={
                    "event": "scanner_probe_failed",
                    "scanner": self.scanner_id,
                    "error": type(exc).__name__,
                },
            )
            self.slots.reachable = False
            self.slots.message = f"probe failed: {type(exc).__name__}"
            return False
        self.slots.reachable = cap.reachable and cap.ready
        self.slots.scan_api = cap.scan_api
        self.slots.version = cap.version
        self.slots.nessus_type = cap.nessus_type
        self.slots.message = cap.message
        self.slots.policies = None if cap.policies is None else frozenset(cap.policies)
        if self.slots.reachable:
            self.breaker.success()
        return self.slots.eligible and not before
