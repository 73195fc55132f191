"""Several daemons sharing pools on one PostgreSQL database ([cluster]).

Each daemon has a row in ``daemons`` with a heartbeat, and owns scanners through leases
(``scanner_leases``: owner, epoch, expiry) renewed with the heartbeat. Only a scanner's
owner launches on and polls it, so per-scanner caps hold cluster-wide without counters
shared between daemons. A daemon takes free or expired leases of the scanners in its zone
(epoch + 1) and re-attaches the scans running there by their deterministic names, as a
restart does (never a second scan); a daemon that loses a lease stops that scanner's
runners without writing, and fencing (see ``PgStore._apply``) refuses any write it still
tries. Queued tasks live in the database only: a dispatcher claims them with ``FOR UPDATE
SKIP LOCKED``, woken by ``NOTIFY`` on submit and by a slow safety re-check every lease-s.

Times are the daemons' own clocks (the injected :class:`Clock`): keep the hosts in NTP sync;
a skew eats into lease-s.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import hashlib
import json
import logging
import math
import os
import re
import socket
from typing import TYPE_CHECKING, Any

import msgspec

from nessus_pool.clock import sleep_or_event
from nessus_pool.config import (
    _CREDENTIAL_SECRETS,
    ClusterConfig,
    Config,
    PoolConfig,
    SecretRef,
)
from nessus_pool.engine.pool import QUEUE_KEYS, SharedQueue
from nessus_pool.errors import ConflictError, LockedError, NessusPoolError, StorageError
from nessus_pool.store.queries import (
    CANCEL_CHANNEL,
    Q_ACQUIRE_LEASE,
    Q_ALIVE,
    Q_CANCELS_FOR,
    Q_DAEMON,
    Q_DAEMONS,
    Q_FENCE,
    Q_HEARTBEAT,
    Q_LEASES,
    Q_NEXT_EXPIRY,
    Q_POOL_STATS,
    Q_QUEUE_KEYS,
    Q_QUEUED_COUNT,
    Q_QUEUED_POOLS,
    Q_RECENT_POOLS,
    Q_RELEASE_LEASES,
    Q_RENEW_LEASES,
    Q_SYNC_SEQ,
    Q_UPSERT_DAEMON,
    SUBMIT_CHANNEL,
)
from nessus_pool.store.writer import Op

if TYPE_CHECKING:
    import asyncpg

    from nessus_pool.engine.core import Engine
    from nessus_pool.store.pg import PgStore

log = logging.getLogger("nessus_pool.engine")

#: queued tasks of a pool that no daemon seen for this long defines are failed
ORPHAN_AFTER_S = 86400.0
#: a pause or resume asked through a daemon that does not run the scan ("pause:<task id>"),
#: and the owner's answer (JSON: task_id, action, refused)
SWITCH_CHANNEL = "nessus_pool_switch"
SWITCHED_CHANNEL = "nessus_pool_switched"


class ClusterSettings(msgspec.Struct, frozen=True, kw_only=True):
    daemon_id: str
    lease_s: float = 15.0
    heartbeat_s: float = 5.0
    #: scanner ids or globs this daemon may own; None: every scanner
    zone: list[str] | None = None
    host: str = ""
    pid: int = 0
    version: str = ""
    config_hash: str = ""
    #: pool name -> hash of its definition (to report pools defined differently)
    pools: dict[str, str] = {}


def default_daemon_id(storage_path: str) -> str:
    """The host name and 8 hex digits of the absolute storage path: stable across restarts,
    and distinct for two daemons on one host (each needs a storage folder of its own)."""
    host = socket.gethostname().split(".")[0] or "host"
    host = "".join(c if c.isalnum() or c in "._-" else "-" for c in host)[:40].lstrip("._-")
    digest = hashlib.sha256(os.path.abspath(storage_path).encode()).hexdigest()[:8]
    return f"{host or 'host'}-{digest}"


def _digest(value: object) -> str:
    return hashlib.sha256(msgspec.json.encode(value, order="sorted")).hexdigest()[:16]


def _masked(ref: SecretRef | None) -> SecretRef | None:
    # a secret written into the config itself is hashed as a mark, never its value
    return "<inline secret>" if isinstance(ref, str) else ref


_SCANNER_SECRETS = ("access_key", "secret_key", "username", "password")


def pool_hashes(pools: list[PoolConfig]) -> dict[str, str]:
    """Pool name -> a hash of its whole definition (scanners included; secrets by their
    references, an inline secret as a mark: no secret value goes into a hash)."""
    return {
        p.name: _digest(
            msgspec.structs.replace(
                p,
                scanners=[
                    msgspec.structs.replace(
                        sc, **{k: _masked(getattr(sc, k)) for k in _SCANNER_SECRETS}
                    )
                    for sc in p.scanners
                ],
            )
        )
        for p in pools
    }


def _credentials_masked(cfg: Config) -> dict[str, object]:
    return {
        name: msgspec.structs.replace(c, **{k: _masked(getattr(c, k)) for k in _CREDENTIAL_SECRETS})
        for name, c in cfg.credentials.items()
    }


def settings_from(cfg: Config, cc: ClusterConfig, pools: list[PoolConfig]) -> ClusterSettings:
    from nessus_pool import __version__

    return ClusterSettings(
        daemon_id=cc.daemon_id or default_daemon_id(cfg.storage.path),
        lease_s=cc.lease_s,
        heartbeat_s=cc.heartbeat_period_s,
        zone=cc.zone,
        host=socket.gethostname(),
        pid=os.getpid(),
        version=__version__,
        # what must agree between daemons (not where each listens or stores its files)
        config_hash=_digest(
            [sorted(pool_hashes(cfg.pools).items()), cfg.security, _credentials_masked(cfg)]
        ),
        pools=pool_hashes(pools),
    )


class Zone:
    """A zone's patterns, compiled once: scanner ids (no ``*``, ``?`` or ``[``) in a set,
    the globs in one regular expression. Matches as ``fnmatch.fnmatchcase`` against each
    pattern would; testing every scanner against every pattern that way cost 59 ms of the
    event loop per heartbeat with 500 scanners in two zones of 250 ids (every 5 s, in the
    launch p99 of bench/scale.py --daemons 2)."""

    __slots__ = ("globs", "ids")

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.ids = frozenset(p for p in patterns if not _GLOB_CHARS.intersection(p))
        globs = [p for p in patterns if _GLOB_CHARS.intersection(p)]
        self.globs = (
            re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs)) if globs else None
        )

    def __contains__(self, scanner_id: str) -> bool:
        return scanner_id in self.ids or (
            self.globs is not None and self.globs.match(scanner_id) is not None
        )


_GLOB_CHARS = frozenset("*?[")


@functools.lru_cache(maxsize=64)
def compiled_zone(patterns: tuple[str, ...]) -> Zone:
    """The :class:`Zone` of ``patterns`` (cached: a daemon's own zone and the few live
    daemons' zones read at each heartbeat)."""
    return Zone(patterns)


def in_zone(zone: list[str] | None, scanner_id: str) -> bool:
    return zone is None or scanner_id in compiled_zone(tuple(zone))


def fair_share(my_zone: list[str], alive_zones: list[list[str] | None]) -> int:
    """How many of ``my_zone``'s scanners this daemon should hold: each scanner counts
    1/n for the n live daemons (this one included) whose zone has it, rounded up, so every
    scanner has an owner and daemons with the same zone split the scanners evenly."""
    zones = [None if z is None else compiled_zone(tuple(z)) for z in alive_zones]
    share = 0.0
    for sid in my_zone:
        n = sum(1 for z in zones if z is None or sid in z)
        share += 1 / max(1, n)
    return math.ceil(share - 1e-9)


class ClusterMember:
    """This daemon's membership: heartbeat, leases, NOTIFY listener, safety re-check."""

    def __init__(self, engine: Engine, store: PgStore, settings: ClusterSettings) -> None:
        self.engine = engine
        self.store = store
        self.settings = settings
        #: ``settings.zone`` compiled (frozen settings: once), for may_own at each beat
        self._zone = None if settings.zone is None else compiled_zone(tuple(settings.zone))
        #: scanner id -> the epoch of our lease on it
        self.held: dict[str, int] = {}
        #: scanners being handed over, or taken and not yet re-attached: nothing new is
        #: placed on them meanwhile
        self.releasing: set[str] = set()
        self.adopting: set[str] = set()
        #: tasks this daemon queued per pool since the last queue refresh (max-queued)
        self._submitted: dict[str, int] = {}
        #: when our leases expire unless renewed (our clock)
        self.expires_at_ms = 0
        self.wake: asyncio.Event | None = None
        self._listener: asyncpg.Connection | None = None
        self._last_recheck_s = 0.0
        #: the earliest expiry of a lease in our zone that another daemon holds: the
        #: heartbeat wakes then, so a dead daemon's scanner moves within lease-s + a beat
        #: of its last renewal rather than lease-s + heartbeat-s
        self.next_expiry_ms: int | None = None
        #: counters for tests and the cluster view
        self.takeovers = 0
        self.losses = 0
        #: "pause:<task id>" -> the owner's answer to a switch we forwarded (None: done)
        self.switches: dict[str, asyncio.Future[str | None]] = {}

    @property
    def daemon_id(self) -> str:
        return self.settings.daemon_id

    def may_own(self, scanner_id: str) -> bool:
        return self._zone is None or scanner_id in self._zone

    def holds(self, scanner_id: str) -> bool:
        """We own the scanner and may launch on it (not while taking or handing it over)."""
        return (
            scanner_id in self.held
            and scanner_id not in self.releasing
            and scanner_id not in self.adopting
        )

    def fence(self, scanner_id: str | None) -> Op:
        """The fence of a write about a task on ``scanner_id`` (None: not on a scanner).
        A scanner we do not hold gets epoch -1: the write is refused."""
        if scanner_id is None:
            return (Q_FENCE, (None, None))
        return (Q_FENCE, (scanner_id, self.held.get(scanner_id, -1)))

    # --- lifecycle ---------------------------------------------------------------------

    async def join(self) -> None:
        """Register this daemon (refused when a live daemon on another host has its id)."""
        s = self.settings
        self.wake = asyncio.Event()
        self.store.fence_owner = s.daemon_id
        now = self.engine.clock.now_ms()

        async def register(conn: Any) -> None:
            await conn.execute(Q_SYNC_SEQ)
            row = await conn.fetchrow(Q_DAEMON, s.daemon_id)
            if (
                row is not None
                and row["host"] != s.host
                and now - int(row["heartbeat_at_ms"]) < s.lease_s * 1000
            ):
                raise LockedError(
                    f"daemon id {s.daemon_id!r} is in use by a live daemon on host "
                    f"{row['host']} (pid {row['pid']}); give this one another cluster.daemon-id"
                )
            await conn.execute(
                Q_UPSERT_DAEMON,
                s.daemon_id,
                s.host,
                s.pid,
                s.version,
                s.config_hash,
                _digest(s.pools),
                json.dumps(s.pools, sort_keys=True),
                now,
                json.dumps(s.zone),
            )

        await self.store.transact(register)
        log.info(
            "joined the cluster",
            extra={"event": "cluster_joined", "daemon_id": s.daemon_id, "zone": s.zone},
        )

    async def run(self) -> None:
        """The heartbeat loop (essential). A database outage is logged and retried; our
        leases are given up once they may have expired (another daemon may take them)."""
        assert self.wake is not None
        clock = self.engine.clock
        while True:
            delay_s = self.settings.heartbeat_s
            if self.next_expiry_ms is not None:
                delay_s = min(delay_s, max(0.0, (self.next_expiry_ms - clock.now_ms()) / 1000))
            await sleep_or_event(clock, self.wake, delay_s)
            self.wake.clear()
            await self.beat()

    async def beat(self) -> None:
        try:
            await self._beat()
        except StorageError as exc:
            log.warning(
                "cluster heartbeat failed",
                extra={"event": "cluster_heartbeat_failed", "error": str(exc)},
            )
            if self.held and self.engine.clock.now_ms() >= self.expires_at_ms - int(
                self.settings.heartbeat_s * 1000
            ):
                for sid in list(self.held):
                    self._lost(sid, "heartbeat failed until the lease may have expired")
            await self._close_listener()

    async def _beat(self) -> None:
        s = self.settings
        clock = self.engine.clock
        now = clock.now_ms()
        expires = now + int(s.lease_s * 1000)
        mine = sorted(self.held)
        mine_zone = [sid for sid in self.engine.scanners if self.may_own(sid)]
        # each daemon tries the scanners in its own order, so that daemons starting
        # together spread over them instead of all asking for the same one first
        zone = sorted(
            (sid for sid in mine_zone if sid not in self.held),
            key=lambda sid: hashlib.sha256(f"{s.daemon_id}/{sid}".encode()).digest(),
        )

        async def renew(conn: Any) -> tuple[dict[str, int], int]:
            await conn.execute(Q_HEARTBEAT, s.daemon_id, now)
            renewed = {
                r[0]: int(r[1])
                for r in await conn.fetch(Q_RENEW_LEASES, s.daemon_id, expires, mine)
            }
            alive = await conn.fetch(Q_ALIVE, now - int(s.lease_s * 1000))
            return renewed, fair_share(mine_zone, [json.loads(r[1]) for r in alive])

        async def acquire(conn: Any, sid: str) -> int | None:
            epoch = await conn.fetchval(Q_ACQUIRE_LEASE, sid, s.daemon_id, expires, now)
            return None if epoch is None else int(epoch)

        async def release(conn: Any, sids: list[str]) -> None:
            await conn.execute(Q_RELEASE_LEASES, s.daemon_id, sids)

        # one short transaction each: the renewal locks only our own lease rows, an
        # acquisition one row, so daemons never wait on each other in a cycle
        renewed, share = await self.store.transact(renew)
        gained: dict[str, int] = {}
        for sid in zone:
            if len(renewed) + len(gained) >= share:
                break
            epoch = await self.store.transact(functools.partial(acquire, sid=sid))
            if epoch is not None:
                gained[sid] = epoch
        # more than our share (a daemon joined): hand over scanners with nothing running
        idle = [sid for sid in renewed if not self._busy(sid)]
        released = idle[: max(0, len(renewed) - share)]
        if released:
            # decided and marked in one step: no claim places a task on them from now on,
            # and one placed already is fenced out once the release commits
            self.releasing.update(released)
            try:
                await self.store.transact(functools.partial(release, sids=released))
                for sid in released:
                    renewed.pop(sid, None)
                    self._lost(sid, "handed over: more than this daemon's share", handed_over=True)
            finally:
                self.releasing.difference_update(released)
        others = [sid for sid in zone if sid not in gained]
        nxt = (await self.store._fetch(Q_NEXT_EXPIRY, (others,)))[0][0] if others else None
        self.next_expiry_ms = None if nxt is None else int(nxt) + 1
        self.expires_at_ms = expires
        for sid in mine:
            if renewed.get(sid) != self.held.get(sid):
                self._lost(sid, "another daemon took the lease")
        await self._ensure_listener()
        for sid, epoch in gained.items():
            await self._gained(sid, epoch)
        if clock.monotonic_s() - self._last_recheck_s >= s.lease_s or gained:
            await self._recheck()
        await self.refresh_queues()

    def submitted(self, pool: str) -> None:
        self._submitted[pool] = self._submitted.get(pool, 0) + 1

    async def queued_estimate(self, pool: str) -> int:
        """Queued tasks of ``pool`` for max-queued: the database's count as of the last
        heartbeat plus what this daemon queued since (a COUNT per submit cost 5 ms with
        100,000 queued); daemons submitting at once may overshoot by a heartbeat's worth."""
        p = self.engine.pools[pool]
        if p.shared is None:
            rows = await self.store._fetch(Q_QUEUED_COUNT, (pool,))
            return int(rows[0][0]) + self._submitted.get(pool, 0)
        return p.shared.queued + self._submitted.get(pool, 0)

    async def refresh_queues(self) -> None:
        """Every pool's queue as the database holds it: depth, oldest, order, in flight."""
        self._submitted.clear()
        views = {name: SharedQueue() for name in self.engine.pools}
        for pool, queued, n, oldest in await self.store._fetch(Q_POOL_STATS):
            sq = views.get(pool)
            if sq is None:
                continue
            if queued:
                sq.queued, sq.oldest_created_ms = int(n), int(oldest)
            else:
                sq.active = int(n)
        for name, sq in views.items():
            if sq.queued:
                rows = await self.store._fetch(Q_QUEUE_KEYS, (name, QUEUE_KEYS))
                sq.keys = [(-int(r[0]), int(r[1])) for r in rows]
        for name, sq in views.items():
            self.engine.pools[name].shared = sq

    async def _recheck(self) -> None:
        """The slow safety net under NOTIFY: wake our dispatchers, pick up cancels asked
        for our tasks, refresh the queued counts."""
        self._last_recheck_s = self.engine.clock.monotonic_s()
        if self.held:
            for r in await self.store._fetch(Q_CANCELS_FOR, (sorted(self.held),)):
                self.on_cancel(r[0])
        self.engine.dlq_counts = await self.store.dlq_counts()
        await self.end_orphans()
        await self.reconcile()
        self.wake_pools()

    async def reconcile(self) -> int:
        """Re-attach what the database shows running on our scanners and we do not run: a
        task whose final row failed to commit has left our memory while its row still says
        running, and nobody else would take it (we hold the lease). Tasks that ended here
        less than 2 x lease-s ago are left alone (a read racing their final commit)."""
        from nessus_pool.engine import shared  # the engine side (imports asyncpg)

        engine = self.engine
        horizon_s = engine.clock.monotonic_s() - 2 * self.settings.lease_s
        for task_id, at_s in list(engine.recently_ended.items()):
            if at_s < horizon_s:
                del engine.recently_ended[task_id]
        n = 0
        for sid in sorted(self.held):
            if self.holds(sid):
                n += await shared.adopt_scanner(engine, sid, reconcile=True)
        return n

    async def end_orphans(self) -> int:
        """Queued tasks of a pool no live daemon defines any more fail (pool_removed), as a
        restart ends them with one daemon: nobody would ever claim them."""
        from nessus_pool.engine import shared  # the engine side (imports asyncpg)

        rows = await self.store._fetch(Q_QUEUED_POOLS)
        if all(pool in self.settings.pools for (pool,) in rows):
            return 0
        # a daemon down for a while (a restart, an upgrade) must not lose its pools' queue:
        # a pool counts as defined while any daemon that defined it was seen in ORPHAN_AFTER_S
        since_ms = self.engine.clock.now_ms() - int(ORPHAN_AFTER_S * 1000)
        known = set(self.settings.pools)
        for (pools,) in await self.store._fetch(Q_RECENT_POOLS, (since_ms,)):
            known.update(json.loads(pools))
        ended = 0
        for (pool,) in rows:
            if pool not in known:
                ended += await shared.end_queued(
                    self.engine, pool, "pool_removed", f"pool {pool!r} is no longer configured"
                )
        return ended

    def wake_pools(self, pool: str | None = None) -> None:
        for name, p in self.engine.pools.items():
            if (pool is None or name == pool) and any(sid in self.held for sid in p.scanners):
                p.wake.set()

    async def _gained(self, sid: str, epoch: int) -> None:
        from nessus_pool.engine import shared  # the engine side (imports asyncpg)

        self.held[sid] = epoch
        # nothing is placed on it until its running scans hold their slots again: a claim
        # in between saw free slots and launched over the cap (found by the cluster proof)
        self.adopting.add(sid)
        try:
            await shared.adopt_scanner(self.engine, sid)
        except BaseException:
            # not re-attached: hold nothing here; the next beat takes it again (our own
            # lease, epoch + 1) and retries the re-attach
            self.held.pop(sid, None)
            shared.drop_scanner(self.engine, sid)
            raise
        finally:
            self.adopting.discard(sid)
        self.wake_pools(
            self.engine.scanners[sid].spec.pool if sid in self.engine.scanners else None
        )
        self.takeovers += 1
        log.info(
            "scanner lease taken",
            extra={"event": "cluster_lease_taken", "scanner": sid, "epoch": epoch},
        )

    def _busy(self, sid: str) -> bool:
        sc = self.engine.scanners.get(sid)
        return sc is not None and bool(sc.slots.active)

    def _lost(self, sid: str, why: str, *, handed_over: bool = False) -> None:
        from nessus_pool.engine import shared  # the engine side (imports asyncpg)

        self.held.pop(sid, None)
        if handed_over:
            log.info(
                "scanner lease handed over",
                extra={"event": "cluster_lease_released", "scanner": sid, "reason": why},
            )
        else:
            self.losses += 1
            log.warning(
                "scanner lease lost",
                extra={"event": "cluster_lease_lost", "scanner": sid, "reason": why},
            )
        shared.drop_scanner(self.engine, sid)

    async def _ensure_listener(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        self._listener = await self.store.listen(
            {
                SUBMIT_CHANNEL: self.on_submit,
                CANCEL_CHANNEL: self.on_cancel,
                SWITCH_CHANNEL: self.on_switch,
                SWITCHED_CHANNEL: self.on_switched,
            }
        )
        # what was notified while nobody listened: look once
        self._last_recheck_s = -1e18

    async def _close_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5.0)

    def on_submit(self, pool: str) -> None:
        self.wake_pools(pool)

    def on_cancel(self, task_id: str) -> None:
        from nessus_pool.engine import shared  # the engine side (imports asyncpg)

        if task_id in self.engine.tasks:
            shared.cancel_local(self.engine, task_id)

    async def ask_switch(self, task_id: str, action: str, timeout_s: float) -> str | None:
        """A pause or resume of a task another daemon runs: ask the owner through a NOTIFY
        (it carries the switch out itself: its runner, memory and row agree) and wait
        ``timeout_s`` on the engine clock for its answer: None (done) or why not. Raises
        :class:`ConflictError` when no daemon answers (an owner down before its takeover)."""
        key = f"{action}:{task_id}"
        fut = self.switches.get(key)
        if fut is None or fut.done():
            fut = self.switches[key] = asyncio.get_running_loop().create_future()

        async def ask(conn: Any) -> None:
            await conn.execute("SELECT pg_notify($1, $2)", SWITCH_CHANNEL, key)

        try:
            await self.store.transact(ask)
            sleeper = asyncio.ensure_future(self.engine.clock.sleep(timeout_s))
            waits: set[asyncio.Future[Any]] = {fut, sleeper}
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
        finally:
            if self.switches.get(key) is fut:
                del self.switches[key]
        if not fut.done():
            raise ConflictError(
                f"task {task_id} cannot {action} now: no daemon answered within "
                f"{timeout_s:g} s (the daemon that owns its scanner may be down; its lease "
                f"moves to another daemon within {self.settings.lease_s:g} s): try again",
                field="task_id",
            )
        return fut.result()

    def on_switch(self, payload: str) -> None:
        action, _, task_id = payload.partition(":")
        if action in ("pause", "resume") and task_id in self.engine.tasks:
            self.engine.spawn(
                self._switch_here(task_id, action), f"{action}:{task_id}", essential=False
            )

    async def _switch_here(self, task_id: str, action: str) -> None:
        """A pause or resume asked through another daemon, for a task we run: carried out
        as if asked here, answered on SWITCHED_CHANNEL."""
        refused: str | None = None
        try:
            if action == "pause":
                await self.engine.windows.pause(task_id)
            else:
                await self.engine.windows.resume(task_id)
        except NessusPoolError as exc:
            refused = exc.message
        answer = json.dumps({"task_id": task_id, "action": action, "refused": refused})

        async def reply(conn: Any) -> None:
            await conn.execute("SELECT pg_notify($1, $2)", SWITCHED_CHANNEL, answer)

        with contextlib.suppress(NessusPoolError):  # the asker times out with a clear 409
            await self.store.transact(reply)

    def on_switched(self, payload: str) -> None:
        try:
            answer = json.loads(payload)
            key = f"{answer['action']}:{answer['task_id']}"
            refused = answer["refused"]
        except (ValueError, KeyError, TypeError):
            return
        fut = self.switches.get(key)
        if fut is not None and not fut.done():
            fut.set_result(refused if isinstance(refused, str) else None)

    async def export_elsewhere(self, task_id: str, scanner_id: str | None) -> str:
        """Why a task's export file is not on this daemon, naming the daemon that launched
        its scan (the one that exports it, unless a takeover moved the scanner since)."""
        launched = [
            ev.detail.rpartition("daemon=")[2]
            for ev in await self.store.events(task_id)
            if ev.status == "dispatching" and ev.detail and "daemon=" in ev.detail
        ]
        by = f"daemon {launched[-1]}" if launched else "another daemon"
        return (
            f"task {task_id}'s export file is kept by the daemon that ran its scan ({by}, "
            f"scanner {scanner_id}), not by this one (daemon {self.daemon_id}): download it "
            "from that daemon; its findings, hosts and comparisons can be read from any daemon"
        )

    async def snapshot(self) -> tuple[list[Any], list[Any]]:
        """The ``daemons`` and ``scanner_leases`` rows (for the cluster view)."""
        daemons = await self.store._fetch(Q_DAEMONS)
        leases = await self.store._fetch(Q_LEASES)
        return daemons, leases

    async def leave(self) -> None:
        """Give our leases up at once (a graceful stop: another daemon need not wait for
        them to expire); the daemon row stays, its heartbeat ages."""
        await self._close_listener()
        held, self.held = sorted(self.held), {}
        if not held:
            return

        async def release(conn: Any) -> None:
            await conn.execute(Q_RELEASE_LEASES, self.daemon_id, held)

        with contextlib.suppress(StorageError):
            await self.store.transact(release)
