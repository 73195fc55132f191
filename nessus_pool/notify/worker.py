"""The delivery worker: one supervised loop that sends the outbox's due rows.

Woken by new rows (the engine's change hook, after their commit), by an operator's retry,
and by the injected clock at the next due attempt; never a poll every second. Each
delivery is a POST with a timeout, no redirects, a capped response read; a non-2xx answer
or a connection error is retried with exponential backoff and jitter up to the target's
``max-attempts``, then the row is ``failed`` (listed and retryable through the API). The
target's secret is read at each delivery (a rotated one is picked up) and never stored,
logged or put in an error.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from nessus_pool import __version__
from nessus_pool.clock import Clock, sleep_or_event
from nessus_pool.config import NotificationConfig, check_webhook_secret, resolve_secret
from nessus_pool.errors import ConfigError, StorageError
from nessus_pool.logs import register_secret
from nessus_pool.metrics import Metrics
from nessus_pool.notify import payload
from nessus_pool.notify.signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    signature_header,
)
from nessus_pool.notify.ssrf import (
    AllowList,
    address_allowed,
    host_of,
    parse_allow_hosts,
)
from nessus_pool.store import BaseStore
from nessus_pool.store import outbox as ob
from nessus_pool.store.outbox import OutboxRow

log = logging.getLogger("nessus_pool.notify")

#: what a receiver's answer may cost us: this much is read, a little of it is kept
MAX_RESPONSE_BYTES = 4096
ERROR_SNIPPET_CHARS = 200
#: deliveries in flight at once (each its own POST)
MAX_IN_FLIGHT = 16
#: a claimed row is left to this daemon for this long past the target's timeout
LEASE_MARGIN_S = 30.0
#: a wake-up at least this often: rows of other daemons (PostgreSQL), pruning, the gauge
SWEEP_S = 300.0
#: delivered and skipped rows are kept this long (then pruned)
RETENTION_S = 7 * 86400.0
#: after a database error, wait this long before the next pass
STORAGE_BACKOFF_S = 5.0

#: prepares a row's payload at its first attempt: the new payload, or None to skip it
Prepare = Callable[[OutboxRow, NotificationConfig], Awaitable[bytes | None]]


def backoff_s(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """The wait after failed attempt ``attempt`` (1-based): half of
    ``min(max_s, base_s * 2**(attempt-1))`` plus a random part up to the other half, so
    retries spread out (jitter) but never come back at once."""
    cap = min(max_s, base_s * 2.0 ** max(0, min(attempt - 1, 40)))
    return cap / 2 + rng.uniform(0.0, cap / 2)


class RefusedAddressError(OSError):
    """A webhook host resolved to an address its target may not reach."""


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's resolver, then refuses the host when any address it
    resolves to is not allowed (see :func:`ssrf.address_allowed`). The connection is made to
    these checked addresses, so a name cannot be re-pointed between check and connect."""

    def __init__(self, allow: AllowList, inner: AbstractResolver | None = None) -> None:
        self.allow = allow
        self.inner = inner or aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        if self.allow.allows_name(host):
            return found
        for r in found:
            addr = ipaddress.ip_address(r["host"])
            if not address_allowed(addr, self.allow):
                raise RefusedAddressError(
                    f"{host} resolves to {addr}, which is not a public or loopback address; "
                    "list the host in allow-hosts to allow it"
                )
        return found

    async def close(self) -> None:
        await self.inner.close()


def _snippet(data: bytes) -> str:
    text = data[:ERROR_SNIPPET_CHARS].decode("utf-8", "replace")
    return "".join(c if c.isprintable() else " " for c in text).strip()


class _Target:
    """A target's session (its own resolver: the allow list is per target)."""

    def __init__(self, config: NotificationConfig, dns: AbstractResolver | None) -> None:
        self.config = config
        self.allow = parse_allow_hosts(config.allow_hosts)
        self.resolver = resolver = GuardedResolver(self.allow, dns)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=resolver, limit=8),
            headers={"User-Agent": f"nessus-pool/{__version__}"},
            trust_env=False,  # no proxy from the environment: the address check is ours
        )

    async def close(self) -> None:
        await self.session.close()
        await self.resolver.close()  # ours: the connector closes only a resolver it made


class DeliveryWorker:
    """Sends the outbox. :meth:`run` is the loop (spawn it supervised); :meth:`poke` is the
    engine's change hook; :meth:`wake` asks for a pass now."""

    def __init__(
        self,
        store: BaseStore,
        clock: Clock,
        targets: Callable[[], list[NotificationConfig]],
        prepare: Prepare,
        metrics: Metrics,
        queued: set[str],
        *,
        exclusive: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self._targets = targets
        self.prepare = prepare
        self.metrics = metrics
        #: task ids whose outbox rows are queued (shared with the OutboxWriter)
        self.queued = queued
        #: the only daemon on this store: leases left by a previous process are dropped
        self.exclusive = exclusive
        self.rng = rng or random.Random()
        #: the resolver under the address guard (None: aiohttp's; tests give a fake DNS)
        self.dns: AbstractResolver | None = None
        self._wake: asyncio.Event | None = None
        #: futures resolved when the worker next waits for a due row or a wake-up
        self._idle_waiters: list[asyncio.Future[None]] = []
        #: while it waits: the clock time (ms) it waits for at most
        self.sleeping_until_ms: int | None = None
        self._sessions: dict[str, _Target] = {}
        #: futures resolved at the next stored outcome (see :meth:`next_outcome`)
        self._outcome_waiters: list[asyncio.Future[None]] = []

    def poke(self, task_id: str) -> None:
        """A task's stored state changed: wake up if its change committed outbox rows."""
        if task_id in self.queued:
            self.queued.discard(task_id)
            self.wake()

    def next_outcome(self) -> asyncio.Future[None]:
        """A future resolved when the next delivery outcome is stored: take it, check what
        you wait for, then await it (tests wait on it instead of polling)."""
        fut = asyncio.get_running_loop().create_future()
        self._outcome_waiters.append(fut)
        return fut

    def next_idle(self) -> asyncio.Future[None]:
        """A future resolved when the worker next goes to sleep until its next due row."""
        fut = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(fut)
        return fut

    @staticmethod
    def _resolve(waiters: list[asyncio.Future[None]]) -> None:
        pending = list(waiters)
        waiters.clear()
        for fut in pending:
            if not fut.done():
                fut.set_result(None)

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        self._wake = asyncio.Event()
        try:
            if self.exclusive:
                await ob.release_claims(self.store)
            await self._loop()
        finally:
            for target in self._sessions.values():
                await target.close()
            self._sessions.clear()

    async def _loop(self) -> None:
        # Deliveries run as children of one TaskGroup for the worker's life: a slow target
        # holds only its own rows (at most MAX_IN_FLIGHT at once), and a child that fails
        # unexpectedly takes the worker down with it (supervised: loud, /readyz fails).
        assert self._wake is not None
        last_prune_ms = 0
        in_flight: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            self.wake()  # a free slot: claim more

        async with asyncio.TaskGroup() as tg:
            while True:
                self._wake.clear()
                free = MAX_IN_FLIGHT - len(in_flight)
                try:
                    now_ms = self.clock.now_ms()
                    rows = []
                    if free > 0:
                        rows = await ob.claim_due(self.store, now_ms, self._lease_ms(), free)
                    for row in rows:
                        task = tg.create_task(self._deliver(row), name=f"notify:{row.target}")
                        in_flight.add(task)
                        task.add_done_callback(done)
                    if free <= 0 or len(rows) == free:
                        await self._wake.wait()  # more may be due: claim when a slot frees
                        continue
                    if now_ms - last_prune_ms >= SWEEP_S * 1000:
                        await ob.prune(self.store, now_ms - int(RETENTION_S * 1000))
                        last_prune_ms = now_ms
                    self.metrics.outbox_depth(await ob.counts(self.store))
                    nxt = await ob.next_due_ms(self.store)
                except StorageError as exc:
                    log.warning(
                        "notification outbox unavailable",
                        extra={"event": "notification_storage_error", "error": str(exc)},
                    )
                    await sleep_or_event(self.clock, self._wake, STORAGE_BACKOFF_S)
                    continue
                now_ms = self.clock.now_ms()
                until_ms = now_ms + int(SWEEP_S * 1000)
                if nxt is not None:
                    until_ms = min(until_ms, max(now_ms, nxt))
                if self._wake.is_set():
                    continue
                self.sleeping_until_ms = until_ms
                self._resolve(self._idle_waiters)
                await sleep_or_event(self.clock, self._wake, (until_ms - now_ms) / 1000)
                self.sleeping_until_ms = None

    def _lease_ms(self) -> int:
        longest = max((t.timeout_s for t in self._targets()), default=10.0)
        return int((longest + LEASE_MARGIN_S) * 1000)

    async def _target(self, name: str) -> _Target | None:
        config = next((t for t in self._targets() if t.name == name), None)
        cached = self._sessions.get(name)
        if config is None:
            return None
        if cached is None or cached.config != config:  # new, or changed by a reload
            old, cached = cached, _Target(config, self.dns)
            self._sessions[name] = cached  # before any await: one session per target
            if old is not None:
                await old.close()
        return cached

    async def _deliver(self, row: OutboxRow) -> None:
        try:
            await self._deliver_once(row)
        except StorageError as exc:
            # the row keeps its claim until the lease ends, then it is tried again
            log.warning(
                "notification outcome not stored",
                extra={"event": "notification_storage_error", "delivery_id": row.delivery_id,
                       "error": str(exc)},
            )  # fmt: skip

    async def _deliver_once(self, row: OutboxRow) -> None:
        target = await self._target(row.target)
        if target is None:
            await self._record(row, ob.FAILED, f"target {row.target!r} is no longer configured")
            return
        cfg = target.config
        if not row.prepared:
            body = await self.prepare(row, cfg)
            if body is None:
                await self._record(row, ob.SKIPPED, None)
                return
            row.payload, row.prepared = body, True
        error = await self._post(target, row)
        row.attempts += 1
        if error is None:
            await self._record(row, ob.DELIVERED, None)
        elif row.attempts >= cfg.max_attempts:
            await self._record(row, ob.FAILED, error)
        else:
            delay_s = backoff_s(row.attempts, cfg.retry_base_delay_s, cfg.retry_max_delay_s,
                                self.rng)  # fmt: skip
            row.next_attempt_at_ms = self.clock.now_ms() + int(delay_s * 1000)
            await self._record(row, ob.PENDING, error)

    async def _post(self, target: _Target, row: OutboxRow) -> str | None:
        """One attempt; None when the receiver took it (2xx), else why not."""
        cfg = target.config
        try:
            secret = check_webhook_secret(
                resolve_secret(cfg.secret, f"notifications.{cfg.name}.secret") or "",
                f"notifications.{cfg.name}.secret",
            )
        except ConfigError as exc:
            return f"secret unavailable: {exc}"
        register_secret(secret, source=f"notifications.{cfg.name}.secret")
        body = row.payload
        if cfg.format == "slack":
            body = payload.slack_body(payload.decode(row.payload))
        ts = self.clock.now_ms() // 1000
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature_header(secret, ts, body),
            DELIVERY_HEADER: row.delivery_id,
            EVENT_HEADER: row.event,
        }
        try:
            async with target.session.post(
                cfg.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=cfg.timeout_s),
            ) as resp:
                head = await resp.content.read(MAX_RESPONSE_BYTES)
                if 200 <= resp.status < 300:
                    return None
                if 300 <= resp.status < 400:
                    return f"HTTP {resp.status}: redirects are not followed"
                return f"HTTP {resp.status}: {_snippet(head)}".rstrip(": ")[:ERROR_SNIPPET_CHARS]
        except TimeoutError:
            return f"no answer within {cfg.timeout_s:g} s"
        except aiohttp.ClientConnectorError as exc:
            cause = exc.os_error
            if isinstance(cause, RefusedAddressError):
                return f"refused: {cause}"
            return f"cannot connect to {host_of(cfg.url)}: {cause.strerror or cause}"
        except aiohttp.ClientError as exc:
            # the URL may carry a token in its path (Slack's do): never in an error
            text = str(exc).replace(cfg.url, host_of(cfg.url))
            return f"{type(exc).__name__}: {text}"[:ERROR_SNIPPET_CHARS]

    async def _record(self, row: OutboxRow, state: str, error: str | None) -> None:
        row.state, row.last_error = state, error
        row.updated_at_ms = self.clock.now_ms()
        await self.store.write([ob.op_update(row)])
        self._resolve(self._outcome_waiters)
        outcome = {ob.PENDING: "retry"}.get(state, state)
        self.metrics.delivery(row.target, outcome)
        fields: dict[str, Any] = {
            "event": f"notification_{outcome}",
            "delivery_id": row.delivery_id,
            "target": row.target,
            "notification_event": row.event,
            "task_id": row.task_id,
            "attempts": row.attempts,
        }
        if error is not None:
            fields["error"] = error
        level = logging.WARNING if state in (ob.FAILED, ob.PENDING) else logging.INFO
        log.log(level, "notification %s", outcome, extra=fields)
