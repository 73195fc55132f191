"""The engine, the one owner of task state: the live tasks, their queues and scanner slots,
and every status change.

A change goes through :meth:`Engine.change`: checked against ``state.ALLOWED``, applied in
memory and its rows queued for commit in one synchronous step, so no coroutine ever sees
memory and the commit order disagree (the races of issue #12 came from an ``await`` between
the two). The class is long because every transition and its bookkeeping (slots, queues,
dead-letter counts, metrics, notifications) belong together; the rest lives beside it:

- ``state``: the transition table; ``outcome``: what a runner step leads to
- ``dispatch``: queued tasks onto free scanners (event-driven, never a sleep loop)
- ``runner``: one dispatched task on one scanner; ``scanner``: a scanner's calls and health
- ``recovery``: unfinished tasks back at start; ``reload``: SIGHUP through public operations
- ``pool``: a pool's state, wait estimate and waiting reason; ``supervise``: background tasks
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from nessus_pool.clock import Clock, sleep_or_event
from nessus_pool.config import PoolConfig
from nessus_pool.engine.cluster import ClusterMember
from nessus_pool.engine.dispatch import dispatch_loop
from nessus_pool.engine.ingest import ingest_export
from nessus_pool.engine.pool import PoolState, never_launches, waiting_reason
from nessus_pool.engine.recovery import recover
from nessus_pool.engine.runner import RunControl, RunnerSettings, TaskRunner
from nessus_pool.engine.scanner import ScannerClient, ScannerHandle, ScannerSpec
from nessus_pool.engine.state import TransitionError, check_transition, transition
from nessus_pool.engine.supervise import Supervisor
from nessus_pool.engine.windows import WindowKeeper
from nessus_pool.errors import CapacityError, ConflictError, NotFoundError
from nessus_pool.metrics import Metrics
from nessus_pool.models import (
    ACTIVE_STATUSES,
    INLINE_CREDENTIAL,
    SshCredential,
    Task,
    TaskStatus,
)
from nessus_pool.retry import CircuitBreaker
from nessus_pool.store import Op, TaskStore
from nessus_pool.store.queries import (
    Q_NOTIFY,
    SUBMIT_CHANNEL,
)

log = logging.getLogger("nessus_pool.engine")

ClientFactory = Callable[[ScannerSpec], ScannerClient]
CredentialResolver = Callable[[str], SshCredential | None]


#: probes and re-attached runners making their first scanner call at once
RECOVERY_CONCURRENCY = 64
#: [cluster] how often a wait on a task run by another daemon reads it again
CLUSTER_WAIT_POLL_S = 1.0
#: a task in one of these holds a scanner slot (its writes are fenced by that lease)
_IN_FLIGHT = ACTIVE_STATUSES


#: exports parsed at once. A parse is Python in a thread, holding the GIL: each one running
#: makes every turn of the event loop wait for it (bench/gil_convoy.py: 1 thread, loop turn
#: p50 0.7 ms, p99 2.4 with the daemon's switch interval; 3 threads 3.0 ms, p99 14; 6
#: threads, as many as the default executor runs on 2 cores, 5.8 ms, p99 39). A wave of
#: scans ending together parsed up to 6 exports at once, and the launches of the slots
#: they freed waited in those turns. The parses share one GIL either way; whether six at
#: once ever finished a wave sooner than one at a time was not measured.
INGEST_CONCURRENCY = 1


def recovery_gate() -> asyncio.Semaphore:
    return asyncio.Semaphore(RECOVERY_CONCURRENCY)


class Engine:
    def __init__(
        self,
        *,
        store: TaskStore,
        clock: Clock,
        exports_dir: Path,
        client_factory: ClientFactory,
        credentials: CredentialResolver,
        metrics: Metrics | None = None,
        max_export_bytes: int = 2 * 1024**3,
        probe_interval_s: float = 30.0,
        default_duration_s: float = 1800.0,
        shutdown_grace_s: float = 20.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.exports_dir = exports_dir
        self.client_factory = client_factory
        self.resolve_credential = credentials
        self.metrics = metrics or Metrics()
        self.settings = RunnerSettings(max_export_bytes=max_export_bytes)
        self.probe_interval_s = probe_interval_s
        self.default_duration_s = default_duration_s
        self.pools: dict[str, PoolState] = {}
        self.scanners: dict[str, ScannerHandle] = {}
        #: queued and in-flight tasks (finished ones live in the store only)
        self.tasks: dict[str, Task] = {}
        self.controls: dict[str, RunControl] = {}
        #: tasks whose end is decided and whose final row is not yet committed: task id ->
        #: the final state (the live task in :attr:`tasks` shows the last durable one)
        self.ending: dict[str, Task] = {}
        self.inline_credentials: dict[str, SshCredential] = {}
        self._seq = 0
        #: every background task, named and supervised
        self.supervisor = Supervisor(clock, shutdown_grace_s=shutdown_grace_s)
        self._changed: dict[str, asyncio.Event] = {}
        self.started = False
        #: bounds the first scanner call of probes and re-attached runners (a restart with
        #: 2,000 running scans and 500 scanners would otherwise send them all at once)
        self.recovery_gate = recovery_gate()
        #: held while an export is parsed and stored (:data:`INGEST_CONCURRENCY`)
        self.ingest_gate = asyncio.Semaphore(INGEST_CONCURRENCY)
        self.dlq_counts: dict[str, int] = {}
        #: runners that failed with an unexpected error, per pool (a metric)
        self.internal_errors: dict[str, int] = {}
        #: called with a task id whenever that task's stored state changes or is deleted
        self.on_change: list[Callable[[str], None]] = []
        #: set by the service: why a task's targets are out of scope now, or None
        self.scope_check: Callable[[Task], Awaitable[str | None]] | None = None
        #: rows to commit with a task's final transition (the notification outbox), built
        #: synchronously from the task in its final state
        self.final_ops: Callable[[Task], list[Op]] | None = None
        #: maintenance windows, pause and resume (engine.windows)
        self.windows = WindowKeeper(self)
        #: [cluster] (PostgreSQL, several daemons): set by the daemon before :meth:`start`;
        #: queued tasks then live in the database only (see ``engine.cluster``)
        self.cluster: ClusterMember | None = None
        #: the asyncio task of each task's runner (a lost lease cancels them)
        self.runner_tasks: dict[str, asyncio.Task[None]] = {}
        #: [cluster] tasks placed by a claim not yet running here, and tasks that ended
        #: here lately (id -> monotonic s): the re-check's re-attach leaves them alone
        self.claiming: set[str] = set()
        self.recently_ended: dict[str, float] = {}

    # --- lifecycle -----------------------------------------------------------------------

    async def start(
        self, pools: list[PoolConfig], specs: list[ScannerSpec], *, hold_background: bool = False
    ) -> None:
        """Load the pools, scanners and every unfinished task. With ``hold_background`` the
        probes, runners and dispatchers it creates wait for :meth:`release_background`, so a
        daemon can open its listener before the first burst of scanner traffic."""
        if hold_background:
            self.supervisor.gate = asyncio.Event()
        self.exports_dir.mkdir(parents=True, exist_ok=True)
        self._seq = await self.store.max_seq()
        self.dlq_counts = await self.store.dlq_counts()
        for pc in pools:
            self.add_pool(pc)
        for spec in specs:
            self.add_scanner(spec)
        self.windows.refresh()
        if self.cluster is None:
            await recover(self)
        else:
            # queued tasks stay in the database; in-flight ones come back with the leases
            await self.cluster.join()
            await self.cluster.beat()
            self.spawn(self.cluster.run(), "cluster:heartbeat")
        self.spawn(self.windows.run(), "windows")  # after recovery: it acts on live tasks
        if not hold_background:
            self.release_background()

    def release_background(self) -> None:
        """Let the background work created by :meth:`start` run, and dispatch."""
        gate, self.supervisor.gate = self.supervisor.gate, None
        if gate is not None:
            gate.set()
        for pool in self.pools.values():
            pool.wake.set()
        self.started = True

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop in order: no more dispatching or probing; runners exporting or ingesting
        results get ``grace_s`` (default ``shutdown_grace_s``) of the engine clock to
        finish; then everything left is cancelled. Every other state was already committed
        as it changed, and final writes are shielded."""
        await self.supervisor.stop(grace_s)
        if self.cluster is not None:
            await self.cluster.leave()
        for sc in self.scanners.values():
            await sc.client.close()

    def spawn(self, coro: object, name: str, *, essential: bool = True) -> asyncio.Task[None]:
        """Run a supervised, named background task that stops with the engine. An
        ``essential`` one (a loop the daemon cannot work without) that raises ends the
        engine's health: :attr:`death` is set and :attr:`on_death` hooks are called."""
        return self.supervisor.spawn(coro, name, essential=essential)

    def critical(self) -> contextlib.AbstractContextManager[None]:
        """Mark the current task as finishing work (export, ingest, final write) that a
        stop lets complete within the grace period."""
        return self.supervisor.critical()

    @property
    def death(self) -> str | None:
        """Why the engine is broken (an essential loop died), or None: readiness fails."""
        return self.supervisor.death

    @property
    def on_death(self) -> list[Callable[[str], None]]:
        """Called once with :attr:`death` when the first essential loop dies."""
        return self.supervisor.on_death

    @property
    def stopping(self) -> bool:
        return self.supervisor.stopping

    def add_pool(self, pc: PoolConfig) -> PoolState:
        pool = PoolState(config=pc)
        self.pools[pc.name] = pool
        pool.dispatcher = self.spawn(dispatch_loop(self, pool), f"dispatch:{pc.name}")
        return pool

    def start_probe(self, sc: ScannerHandle) -> None:
        """(Re)start the scanner's probe loop unless it runs."""
        if sc.prober is None or sc.prober.done():
            sc.prober = self.spawn(self._probe_loop(sc), f"probe:{sc.scanner_id}")

    def add_scanner(self, spec: ScannerSpec) -> ScannerHandle:
        pc = self.pools[spec.pool].config
        sc = ScannerHandle(
            spec,
            self.client_factory(spec),
            self.clock,
            breaker=CircuitBreaker(pc.breaker_failures, pc.breaker_reset_s),
        )
        self.scanners[spec.scanner_id] = sc
        self.pools[spec.pool].scanners[spec.scanner_id] = sc
        if self.cluster is None or self.cluster.may_own(spec.scanner_id):
            # a scanner outside this daemon's zone may be out of its reach: not probed
            self.start_probe(sc)
        return sc

    def start_runner(
        self,
        pool: PoolState,
        t: Task,
        sc: ScannerHandle,
        *,
        fresh: bool = False,
        written: asyncio.Future[None] | None = None,
    ) -> None:
        control = self.controls.setdefault(t.task_id, RunControl())
        runner = TaskRunner(self, pool, t, sc, control, fresh=fresh, written=written)
        task = self.spawn(runner.run(), f"task:{t.task_id}", essential=False)
        self.runner_tasks[t.task_id] = task
        task.add_done_callback(
            lambda _: (
                self.runner_tasks.pop(t.task_id)
                if self.runner_tasks.get(t.task_id) is task
                else None
            )
        )

    async def _probe_loop(self, sc: ScannerHandle) -> None:
        async with self.recovery_gate:
            reachable = await sc.probe()
        while not sc.slots.removed:
            if reachable:
                self.pools[sc.spec.pool].wake.set()
            pool = self.pools.get(sc.spec.pool)
            interval = pool.config.probe_interval_s if pool else self.probe_interval_s
            delay = interval if sc.slots.reachable else min(5.0, interval)
            await sleep_or_event(self.clock, sc.probe_now, delay)
            sc.probe_now.clear()
            if sc.slots.removed:
                return
            reachable = await sc.probe()

    # --- state changes (called by runners and the service) -------------------------------

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def change(
        self,
        t: Task,
        to: TaskStatus,
        event: str,
        *,
        ev_reason: str | None = None,
        ev_detail: str | None = None,
        also: list[Op] | None = None,
        **fields: Any,
    ) -> asyncio.Future[None]:
        """The one place a task's status changes. Checked against :data:`state.ALLOWED`
        (a refused change is logged and raises :class:`TransitionError`), applied to the task
        with ``fields``, and its rows queued for commit, all without an await: no other
        coroutine can run between the change in memory and its place in the commit order.
        Returns the commit's future (cancelling it does not withdraw the rows). ``also``:
        ops committed with it."""
        ops = self.change_ops(t, to, event, ev_reason=ev_reason, ev_detail=ev_detail, **fields)
        return self.store.enqueue(ops + also if also else ops)

    def change_ops(
        self,
        t: Task,
        to: TaskStatus,
        event: str,
        *,
        ev_reason: str | None = None,
        ev_detail: str | None = None,
        **fields: Any,
    ) -> list[Op]:
        """:meth:`change` without queueing its rows: they are returned, for a caller that
        commits them in a transaction of its own (a cluster claim or cancel). In a cluster
        the first op is the fence: the lease of the scanner the task holds (or takes)."""
        fence_on = t.scanner_id if t.status in _IN_FLIGHT else None
        if to is TaskStatus.DISPATCHING and fence_on is None:
            fence_on = fields.get("scanner_id")
        try:
            if t.task_id in self.ending:
                raise TransitionError(f"task {t.task_id} has ended (its final row is queued)")
            check_transition(t.task_id, t.status, to, dead_letter=t.dead_letter)
        except TransitionError:
            log.error(
                "transition refused",
                extra={
                    "event": "task_transition_refused",
                    "task_id": t.task_id,
                    "from": t.status.value,
                    "to": to.value,
                    "step": event,
                },
            )
            raise
        ops = transition(
            t,
            to,
            event,
            self.clock.now_ms(),
            ev_reason=ev_reason,
            ev_detail=ev_detail,
            checked=True,
            **fields,
        )
        if to.is_terminal and self.final_ops is not None:
            ops += self.final_ops(t)  # same commit: a crash never keeps one without the other
        if self.cluster is not None:
            ops.insert(0, self.cluster.fence(fence_on))
        log.info(
            "task %s",
            event,
            extra={
                "event": f"task_{event}",
                "task_id": t.task_id,
                "pool": t.pool,
                "scanner": t.scanner_id,
                "reason": ev_reason,
            },
        )
        return ops

    async def persist(
        self,
        t: Task,
        event: str,
        *,
        reason: str | None = None,
        detail: str | None = None,
        notify: bool = True,
    ) -> None:
        """Record a step that keeps the task's status (``created``, ``cancel_requested``)."""
        await self.change(t, t.status, event, ev_reason=reason, ev_detail=detail)
        if notify:
            self._notify(t.task_id)

    async def submit(self, t: Task, inline: SshCredential | None = None) -> Task:
        """Persist then queue. Returns once the row is committed."""
        pool = self.pools.get(t.pool)
        if pool is None:
            raise NotFoundError(f"pool {t.pool!r} does not exist")
        queued = len(pool.queue)
        if self.cluster is not None:
            queued = await self.cluster.queued_estimate(t.pool)
        if queued >= pool.config.max_queued:
            raise CapacityError(
                f"pool {t.pool!r} already has {queued} queued scans (max-queued = "
                f"{pool.config.max_queued}); wait for some to finish or use another pool"
            )
        if t.requested_scanner is not None and t.requested_scanner not in pool.scanners:
            raise NotFoundError(f"scanner {t.requested_scanner!r} is not in pool {t.pool!r}")
        blocked = never_launches(pool, t.requested_scanner)
        if blocked:
            why = "; ".join(f"{sid}: {self.scanners[sid].slots.message}" for sid in blocked)
            raise ConflictError(
                f"pool {t.pool!r} cannot launch scans: every scanner it could use is "
                f"export-only ({why}); the scan would wait forever. Use a pool with a "
                "scanner licensed for scan creation through the API"
            )
        if self.cluster is not None:
            from nessus_pool.engine import shared  # PostgreSQL only (asyncpg)

            return await shared.submit(self, t, inline)
        if inline is not None:
            self.inline_credentials[t.task_id] = inline
        await self.persist(t, "queued")
        self.tasks[t.task_id] = t
        pool.queue.push(t)
        pool.wake.set()
        self.metrics.submitted(t.pool)
        return t

    async def cancel(self, task_id: str) -> Task:
        t = self.tasks.get(task_id)
        if self.cluster is not None and (t is None or t.status is TaskStatus.QUEUED):
            from nessus_pool.engine import shared  # PostgreSQL only (asyncpg)

            return await shared.cancel(self, task_id)
        if t is None:
            stored = await self.store.get_task(task_id)
            if stored is None:
                raise NotFoundError(f"task {task_id!r} not found")
            raise ConflictError(f"task {task_id} already ended ({stored.status.value})")
        ending = self.ending.get(task_id)
        if ending is not None:  # ended, its final row not yet committed
            raise ConflictError(f"task {task_id} already ended ({ending.status.value})")
        if t.status is TaskStatus.QUEUED:
            self.pools[t.pool].queue.remove(task_id)
            await self.finish(t, TaskStatus.CANCELED, "canceled_by_user")
            return t
        control = self.controls.setdefault(task_id, RunControl())
        if control.cancel_requested:
            return t  # asked already: one row, however often a client repeats it
        control.cancel_requested = True
        control.wake.set()
        await self.persist(t, "cancel_requested")
        return t

    async def requeue(
        self, t: Task, reason: str, *, use_attempt: bool = True, error: str | None = None
    ) -> None:
        """Back to the pool's queue (or dead-lettered once its attempts are used up)."""
        await asyncio.shield(self.requeue_nowait(t, reason, use_attempt=use_attempt, error=error))

    def requeue_nowait(
        self, t: Task, reason: str, *, use_attempt: bool = True, error: str | None = None
    ) -> asyncio.Future[None]:
        """:meth:`requeue` without waiting for its commit. The task is back in its queue on
        return, in the same step as its status: a cancel finds it queued and takes it out."""
        pool = self.pools[t.pool]
        if use_attempt and t.attempt - t.attempt_base >= pool.config.max_attempts:
            return self.finish_nowait(
                t,
                TaskStatus.FAILED,
                "attempts_exhausted",
                f"{reason}: {error or 'no more attempts'}",
                dead_letter=True,
            )
        self._release(t)
        shared = self.cluster is not None
        fut = self.change(
            t,
            TaskStatus.QUEUED,
            "requeued",
            ev_reason=reason,
            ev_detail=error,
            also=[(Q_NOTIFY, (SUBMIT_CHANNEL, t.pool))] if shared else None,
            attempt=t.attempt if use_attempt else max(0, t.attempt - 1),
            scanner_id=None,
            remote_scan_id=None,
            remote_scan_uuid=None,
            remote_scan_name=None,
            progress_pct=None,
            reason=reason,
            error=error,
        )
        self.tasks[t.task_id] = t
        if shared:
            # back in the database's queue: any daemon may claim it once it is committed
            fut.add_done_callback(lambda f: self._left(t))
        else:
            pool.queue.push(t)
            pool.wake.set()
        fut.add_done_callback(lambda f: self.committed(f, t.task_id))
        return fut

    def _left(self, t: Task) -> None:
        if self.tasks.get(t.task_id) is t and t.status is TaskStatus.QUEUED:
            self.tasks.pop(t.task_id, None)
            self.controls.pop(t.task_id, None)

    async def finish(
        self,
        t: Task,
        status: TaskStatus,
        reason: str,
        error: str | None = None,
        *,
        dead_letter: bool = False,
    ) -> None:
        """End the task. Shielded: once decided, a cancelled caller cannot stop the final
        row from being committed or the engine's books from being closed."""
        await asyncio.shield(self.finish_nowait(t, status, reason, error, dead_letter=dead_letter))

    def finish_nowait(
        self,
        t: Task,
        status: TaskStatus,
        reason: str,
        error: str | None = None,
        *,
        dead_letter: bool = False,
    ) -> asyncio.Future[None]:
        """:meth:`finish` without waiting for its commit. The final state is decided on
        return: the task is in :attr:`ending`, so a cancel or any other change now is refused
        instead of being written after the final row. Readers keep seeing the live task
        until the final row is durable; then it takes the final state and leaves
        :attr:`tasks` (so they never fall back to an older stored copy in between)."""
        final = msgspec.structs.replace(t)
        fut = self.change(
            final,
            status,
            status.value,
            ev_reason=reason,
            ev_detail=error,
            reason=reason,
            error=error,
            dead_letter=dead_letter,
            finished_at_ms=self.clock.now_ms(),
            progress_pct=100 if status is TaskStatus.COMPLETED else t.progress_pct,
        )
        self.ending[t.task_id] = final
        # The scan has ended on the scanner: its slot is free now, not after our commit.
        # The final row is already queued, and group commits keep their order, so the next
        # task's "dispatching" is never durable before this task's end.
        self._release(t)
        if dead_letter:
            self.dlq_counts[t.pool] = self.dlq_counts.get(t.pool, 0) + 1
        pool = self.pools.get(t.pool)
        duration_s = None
        if final.started_at_ms is not None and final.finished_at_ms is not None:
            duration_s = (final.finished_at_ms - final.started_at_ms) / 1000
            if status is TaskStatus.COMPLETED and pool is not None:
                pool.durations_s.append(duration_s)
        self.metrics.finished(t.pool, status.value, duration_s)
        fut.add_done_callback(lambda f: self._ended(f, t, final))
        if pool is not None:
            pool.wake.set()
        return fut

    def _ended(self, fut: asyncio.Future[None], t: Task, final: Task) -> None:
        # the final row is committed (or failed: the end was decided either way)
        for name in final.__struct_fields__:
            setattr(t, name, getattr(final, name))
        self.ending.pop(t.task_id, None)
        if self.cluster is not None:
            self.recently_ended[t.task_id] = self.clock.monotonic_s()
        if self.tasks.get(t.task_id) is t:
            self.tasks.pop(t.task_id, None)
            self.controls.pop(t.task_id, None)
            self.inline_credentials.pop(t.task_id, None)
        self.committed(fut, t.task_id)

    def committed_now(self, task_id: str) -> None:
        """A change committed by a transaction of its own (a cluster claim)."""
        self._notify(task_id)

    def committed(self, fut: asyncio.Future[None], task_id: str) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.error(
                "task state not committed",
                extra={
                    "event": "task_commit_failed",
                    "task_id": task_id,
                    "error": str(fut.exception()),
                },
            )
        self._notify(task_id)

    async def revive(self, t: Task) -> None:
        """Put a dead-lettered task back in its queue for a fresh set of attempts."""
        pool = self.pools[t.pool]
        if t.task_id in self.tasks:
            raise ConflictError(f"task {t.task_id} is still ending; try again in a moment")
        shared = self.cluster is not None
        fut = self.change(
            t,
            TaskStatus.QUEUED,
            "requeued",
            ev_reason="dlq_retry",
            also=[(Q_NOTIFY, (SUBMIT_CHANNEL, t.pool))] if shared else None,
            dead_letter=False,
            attempt_base=t.attempt,
            scanner_id=None,
            remote_scan_name=None,
            remote_scan_uuid=None,
            remote_scan_id=None,
            finished_at_ms=None,
            started_at_ms=None,
            dispatched_at_ms=None,
            progress_pct=None,
            reason="dlq_retry",
            error=None,
        )
        self.dlq_counts[t.pool] = max(0, self.dlq_counts.get(t.pool, 0) - 1)
        if shared:
            await asyncio.shield(fut)
            self._notify(t.task_id)
            return
        self.tasks[t.task_id] = t
        # queued in the same step (a cancel from now on finds it there), but the
        # dispatcher is woken once the row is durable: the caller sees it queued
        pool.queue.push(t)
        try:
            await asyncio.shield(fut)
        finally:
            pool.wake.set()
        self._notify(t.task_id)

    async def purge(self, tasks: list[Task]) -> None:
        await self.store.delete_tasks([t.task_id for t in tasks])
        for t in tasks:
            self._notify(t.task_id)
            if t.dead_letter:
                self.dlq_counts[t.pool] = max(0, self.dlq_counts.get(t.pool, 0) - 1)
        files = [Path(t.export_path) for t in tasks if t.export_path]
        if files:
            await asyncio.to_thread(_unlink_all, files)

    def _release(self, t: Task) -> None:
        sc = self.scanners.get(t.scanner_id or "")
        if sc is not None and sc.slots.release(t.task_id):
            self.pools[sc.spec.pool].wake.set()
            if sc.slots.removed and not sc.slots.active:
                self.spawn(self._retire(sc), f"retire:{sc.scanner_id}", essential=False)

    @property
    def max_export_bytes(self) -> int:
        return self.settings.max_export_bytes

    @property
    def delete_remote_scans(self) -> bool:
        """Delete our own scans on the scanner once their export is downloaded."""
        return self.settings.delete_remote_scans

    @delete_remote_scans.setter
    def delete_remote_scans(self, value: bool) -> None:
        self.settings = msgspec.structs.replace(self.settings, delete_remote_scans=value)

    def owns(self, t: Task) -> bool:
        """``t`` is the live copy of an unfinished task (not one that ended or was replaced)."""
        return self.tasks.get(t.task_id) is t and t.task_id not in self.ending

    def on_internal_error(self, t: Task) -> None:
        self.internal_errors[t.pool] = self.internal_errors.get(t.pool, 0) + 1

    def on_launched(self, t: Task) -> None:
        self.metrics.launched(t.pool)
        self._notify(t.task_id)

    def on_status(self, t: Task) -> None:
        """A runner's committed step that watchers hear of (``exporting``, ``exported``)."""
        self._notify(t.task_id)

    def on_progress(self, t: Task, progress_pct: int | None, hosts: int) -> None:
        if progress_pct is not None and progress_pct != t.progress_pct:
            t.progress_pct = progress_pct
            self._notify(t.task_id)

    def credential_for(self, t: Task) -> SshCredential | None:
        if t.credential is None:
            return None
        if t.credential == INLINE_CREDENTIAL:
            return self.inline_credentials.get(t.task_id)
        return self.resolve_credential(t.credential)

    def export_path(self, t: Task) -> Path:
        return self.exports_dir / f"{t.task_id}-a{t.attempt}.nessus"

    async def ingest_results(self, t: Task) -> bool:
        """Parse the export, store findings and results; True if authentication failed."""
        async with self.ingest_gate:
            result = await ingest_export(self.store, t)
        t.authentication_status = result.validation.authentication_status.value
        self.metrics.validated(t.pool, t.authentication_status)
        return t.scan_type.is_authenticated and t.authentication_status == "failed"

    # --- observation ---------------------------------------------------------------------

    def _notify(self, task_id: str) -> None:
        for hook in self.on_change:
            hook(task_id)
        ev = self._changed.pop(task_id, None)
        if ev is not None:
            ev.set()

    async def wait_change(self, task_id: str, timeout_s: float) -> bool:
        """Wait until the task changes (status or progress) or ``timeout_s`` passes. [cluster]
        A task another daemon runs changes out of our sight: the wait ends after at most
        :data:`CLUSTER_WAIT_POLL_S`, and the caller reads the database again."""
        ev = self._changed.setdefault(task_id, asyncio.Event())
        if self.cluster is not None and task_id not in self.tasks:
            timeout_s = min(timeout_s, CLUSTER_WAIT_POLL_S)
        return await sleep_or_event(self.clock, ev, timeout_s)

    def queue_position(self, t: Task) -> int | None:
        pool = self.pools.get(t.pool)
        if pool is not None and pool.shared is not None:
            # [cluster] the database's order, as of the last heartbeat
            if t.status is not TaskStatus.QUEUED:
                return None
            return pool.shared.position(t.priority, t.seq)
        return pool.queue.position(t.task_id) if pool else None

    def estimated_wait_s(self, t: Task) -> tuple[float | None, str]:
        pool = self.pools.get(t.pool)
        if pool is None:
            return None, "not queued"
        return pool.estimated_wait_s(self.queue_position(t), self.default_duration_s)

    def waiting_reason(self, t: Task) -> str | None:
        """Why a queued task is not dispatched now (see :data:`pool.WAITING_REASONS`); None
        when it is not queued or a scanner can take it."""
        if t.status is not TaskStatus.QUEUED or t.task_id in self.ending:
            return None
        pool = self.pools.get(t.pool)
        if pool is None:
            return "no_scanners"
        if pool.shared is not None and pool.active >= pool.capacity > 0:
            return "capacity_full"  # [cluster] every daemon's scans, from the database
        return waiting_reason(pool, t.requested_scanner, t.policy)

    def pool_waiting_reason(self, name: str) -> str | None:
        """Why the pool's queued tasks wait (None when nothing is queued or it dispatches)."""
        pool = self.pools.get(name)
        if pool is None or not pool.queue_depth:
            return None
        if pool.shared is not None and pool.active >= pool.capacity > 0:
            return "capacity_full"
        return waiting_reason(pool)

    def set_scanner_enabled(self, scanner_id: str, enabled: bool) -> ScannerHandle:
        """Drain a scanner (no new scans; running ones finish) or enable it again."""
        sc = self.scanners.get(scanner_id)
        if sc is None:
            raise NotFoundError(f"scanner {scanner_id!r} not found", field="scanner_id")
        sc.slots.draining = not enabled
        if enabled:
            self.pools[sc.spec.pool].wake.set()
        return sc

    async def retire_scanner(self, sc: ScannerHandle) -> None:
        sc.slots.removed = True
        sc.probe_now.set()
        if not sc.slots.active:
            await self._retire(sc)

    async def _retire(self, sc: ScannerHandle) -> None:
        if not sc.slots.removed or sc.slots.active:
            return  # listed again by a later reload, or still finishing scans
        self.scanners.pop(sc.scanner_id, None)
        pool = self.pools.get(sc.spec.pool)
        if pool is not None:
            pool.scanners.pop(sc.scanner_id, None)
        await sc.client.close()
        log.info("scanner retired", extra={"event": "scanner_retired", "scanner": sc.scanner_id})


def _unlink_all(files: list[Path]) -> None:
    # one file we cannot delete (a directory in its place, permissions) must not stop the
    # rest, nor the housekeeping loop: log it and go on
    for f in files:
        try:
            f.unlink(missing_ok=True)
        except OSError as exc:
            log.warning(
                "export file not deleted",
                extra={"event": "export_unlink_failed", "path": str(f), "error": str(exc)},
            )


# kept importable from here (the daemon's import)
from nessus_pool.engine.reload import apply_reload  # noqa: E402

__all__ = ["ClientFactory", "CredentialResolver", "Engine", "PoolState", "apply_reload"]
